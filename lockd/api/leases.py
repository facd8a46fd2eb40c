"""Time left on etcd leases, asked at most once a second per lease, so listings stay cheap.

A watch cannot show lease refreshes (keepalives change no key), so the time left on a holder's lease has to be
asked with ``/v3/lease/timetolive``. Between two asks the answer is extrapolated: a lease refreshed in between
only has more time left than we say, never less. lockd holders share one session lease per process, so a
listing of thousands of lockd-held locks costs a handful of asks; stock tooz takes a lease per lock, so the
number of asks per request is capped and the rest are answered from older asks (or null if never asked).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from lockd.etcd.client import EtcdClient

MAX_AGE = 1.0  # seconds an answer is used before asking again
MAX_ASKS_PER_REQUEST = 64


@dataclass(frozen=True)
class LeaseTTL:
    remaining: float  # seconds left when asked; -1 if the lease is gone
    granted: float  # the TTL the lease was granted with
    asked_at: float  # time.monotonic() of the ask

    def left(self, now: float) -> float | None:
        if self.remaining < 0:
            return None
        return round(max(0.0, self.remaining - (now - self.asked_at)), 3)

    def last_refresh(self, now: float) -> float:
        """Seconds since the holder last refreshed the lease (granted minus remaining, aged)."""
        return max(0.0, self.granted - self.remaining) + (now - self.asked_at)


class LeaseClock:
    """A small cache of ``timetolive`` answers. Thread-safe; :meth:`refresh` does the I/O."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self._known: dict[int, LeaseTTL] = {}
        self._mutex = threading.Lock()

    def stale(self, leases: Iterable[int]) -> list[int]:
        """The leases among ``leases`` whose answer is missing or older than MAX_AGE (lease 0 is no lease)."""
        now = time.monotonic()
        known = self._known
        out = []
        for lease in set(leases):
            entry = known.get(lease)
            if lease and (entry is None or now - entry.asked_at > MAX_AGE):
                out.append(lease)
        return out

    def refresh(self, leases: list[int]) -> None:
        """Ask etcd about up to MAX_ASKS_PER_REQUEST leases. Raises BackendError when etcd cannot answer."""
        for lease in leases[:MAX_ASKS_PER_REQUEST]:
            asked_at = time.monotonic()
            answer = self._client.call("lease/timetolive", {"ID": str(lease)})
            entry = LeaseTTL(float(answer.get("TTL", -1)), float(answer.get("grantedTTL", 0)), asked_at)
            with self._mutex:
                self._known[lease] = entry
        self._forget_old()

    def get(self, lease: int) -> LeaseTTL | None:
        return self._known.get(lease)

    def _forget_old(self) -> None:
        """Drop answers nobody asked for in a minute, so leases of long-gone holders do not pile up."""
        cutoff = time.monotonic() - 60.0
        with self._mutex:
            if len(self._known) > 1024:
                self._known = {k: v for k, v in self._known.items() if v.asked_at >= cutoff}
