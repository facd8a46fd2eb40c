"""The timeline's memory: a bounded log of finished holds, in the order they ended.

Theory of operation
-------------------
A *hold* is one acquisition of one lock: it starts when the lock key comes to name a holder (a put, or a grant:
a put over the key by the releaser, naming the next waiter) and ends when the key is deleted or put again for
another holder. The lock view (lockd.api.view) sees both in its watch and appends the hold here when it ends,
with how it ended:

- ``broken``: an audit record of that lock and that token (lockd.force_break) landed in the same revision as
  the delete; the break's txn writes both, so nothing else can look like it.
- ``lost``: the holder's member record went in the same revision: its session lease ended (expired, or was
  revoked by a process that stopped holding locks), and etcd deleted every key on it at once.
- ``released``: any other delete, and every grant (the holder handed the lock to the next waiter).
- ``unobserved``: the view's watch broke (etcd restarted, the connection cut, a compaction) while the hold was
  on, and the full read that follows found the key gone or naming another holder. The hold ended somewhere
  between the moment the view last knew its copy current (its watch's last batch, or its last full read) and
  that read: ``ended`` is the read, ``ended_after`` the other bound (``ended_between`` in the API); how it ended
  and how long it was held are not known, and it counts in no hold percentile of the profile.

How long a hold waited is known when the view saw the holder's queue entry appear (from then to the start);
a lockd holder that took a free lock with an empty queue puts no entry and waited for nothing (0); a stock tooz
holder, or an entry older than the view's last full read, leaves it unknown.

Cost: one small frozen slots object per hold (no dict), appended to a deque; the oldest go when there are more
than ``max_holds`` or they ended more than ``max_age`` seconds ago, whichever comes first. Each hold gets a
sequence number; numbers are contiguous within the log, so a page cursor ("older than hold N") is found by
arithmetic, not a search, and stays valid while the log turns over (the holds before it are simply gone).
Strings that repeat across holds (member, host, template) are interned, so 100,000 holds cost tens of
megabytes (tests/unit/test_history.py measures it).

Not kept: holds that began and ended while the view was not watching (the full read after a broken stream sees
only what is held then); holds still in progress are the view's, not the log's.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from lockd.config import DEFAULT_MAX_AGE, DEFAULT_MAX_HOLDS

#: How a hold ended; "held" marks one still in progress (only in answers, never in the log).
ENDINGS = ("released", "lost", "broken", "unobserved")


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold of one lock, by one owner (a thread of a process; every owner field None for stock tooz)."""

    seq: int  # 0 for a hold still in progress
    name: str
    template: str  # the holder's template, else the name with its ids folded (lockd.api.profile.fold)
    member: str | None
    host: str | None
    pid: int | None
    thread: int | None
    token: int
    started: float | None  # wall time the watch saw it start; the holder's own after a full read; None: unknown
    waited: float | None  # from its queue entry's appearance in the view to the start; None: unknown
    ended: float | None  # None while held; for an unobserved end, the latest it can have been
    how: str  # one of ENDINGS, or "held"
    ended_after: float | None = None  # an unobserved end only: the earliest it can have been

    @property
    def held(self) -> float | None:
        """Seconds held (so far, for one in progress: pass its end as ``ended``); None when not known."""
        if self.started is None or self.ended is None or self.ended_after is not None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def ended_between(self) -> tuple[float, float] | None:
        """For an end the view did not see (``unobserved``): the two moments it lies between; else None."""
        if self.ended_after is None or self.ended is None:
            return None
        return (self.ended_after, self.ended)


def intern(text: str | None) -> str | None:
    """The one copy of a string that repeats across holds (member, host, template)."""
    return sys.intern(text) if text is not None else None


class HoldLog:
    """Finished holds, oldest first, bounded by count and age. Thread-safe: the watch appends, handlers read."""

    def __init__(self, max_holds: int = DEFAULT_MAX_HOLDS, max_age: float = DEFAULT_MAX_AGE) -> None:
        """``max_holds`` 0 keeps nothing (history off); ``max_age`` in seconds."""
        self.max_holds = max(0, int(max_holds))
        self.max_age = float(max_age)
        self._holds: deque[Hold] = deque()
        self._next_seq = 1
        self._mutex = threading.Lock()

    def __len__(self) -> int:
        return len(self._holds)

    @property
    def enabled(self) -> bool:
        return self.max_holds > 0

    def append(
        self,
        name: str,
        template: str,
        owner: tuple[str | None, str | None, int | None, int | None],
        token: int,
        started: float | None,
        waited: float | None,
        ended: float,
        how: str,
        ended_after: float | None = None,
    ) -> None:
        """Record a hold that ended at ``ended`` (wall time), dropping what falls out of the bounds.
        ``ended_after``: for an end not seen (``unobserved``), the earliest it can have been; ``ended`` the latest."""
        if not self.max_holds:
            return
        member, host, pid, thread = owner
        with self._mutex:
            hold = Hold(
                self._next_seq, name, template, intern(member), intern(host), pid, thread, token, started, waited,
                ended, how, ended_after,
            )  # fmt: skip
            self._next_seq += 1
            holds = self._holds
            holds.append(hold)
            if len(holds) > self.max_holds:
                holds.popleft()
            horizon = ended - self.max_age
            while holds and (holds[0].ended or 0.0) < horizon:
                holds.popleft()

    def page(
        self,
        *,
        name: str | None = None,
        template: str | None = None,
        since: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[list[Hold], int | None]:
        """Holds that ended at or after ``since``, newest first, of ``name`` / ``template`` when given, older than
        hold number ``before`` (a previous page's cursor): at most ``limit`` of them, and the cursor for the next
        page (None when this one is the last)."""
        found: list[Hold] = []
        with self._mutex:
            for hold in self._newest_first(before):
                if since is not None and (hold.ended or 0.0) < since:
                    break  # appended in the order they ended: everything further is older
                if (name is None or hold.name == name) and (template is None or hold.template == template):
                    if len(found) == limit:
                        return found, found[-1].seq
                    found.append(hold)
        return found, None

    def _newest_first(self, before: int | None) -> Iterator[Hold]:
        holds = self._holds
        if not holds:
            return iter(())
        if before is None:
            return reversed(holds)
        skip = holds[-1].seq - before + 1  # holds newer than or equal to the cursor
        if skip >= len(holds):
            return iter(())
        return islice(reversed(holds), max(0, skip), None)
