"""What a patched oslo external lock costs uncontended, next to oslo's file lock, lockd alone and stock tooz.

A measurement, not a test. ``drivers_shim.patch_lockutils()`` makes ``lockutils.lock(name, external=True,
lock_path=D)`` take oslo's own file lock in D and then the lockd lock of the same name (released in reverse);
before issue 22 it took the lockd lock only. This script measures what that costs, in ONE run on one etcd:

- ``file``: unpatched ``with lockutils.lock(name, external=True, lock_path=D): pass``, the file lock alone (and
  oslo's in-process lock in front of it): the floor of the local part;
- ``patched@TREE``, one per ``--tree``: the same ``with`` statement after ``drivers_shim.configure(backend_url=URL)``
  and ``drivers_shim.patch_lockutils()``, importing ``drivers_shim`` and ``lockd`` from TREE (a checkout or a
  ``git worktree`` of another commit; it goes first on ``PYTHONPATH``, ahead of the editable install). Every child
  prints the files it imported, so the trees can be seen to differ;
- ``lockd``: the lockd lock alone through tooz (``get_coordinator(lockd+etcd3+http://..)``, ``get_lock(name)``
  per cycle, acquire, release), from the first tree;
- ``stock``: stock tooz's ``etcd3+http://`` lock on the same etcd (a lease and a txn to acquire, a txn to release),
  as the project's benchmarks always measure next to lockd.

Each variant runs in its own child process (this script with ``--child``), which warms up (``--warmup`` cycles)
and then times acquire+release cycles with ``time.perf_counter_ns`` on a lock name no other child uses (or a new
name per cycle, ``--name-per-cycle``). ``--rounds`` rounds; each round starts a fresh child of every variant and
has them time ``--cycles`` cycles in turns of ``--batch`` cycles, one child at a time (nothing is contended), the
order of the turns rotated by one each time (``--order shuffle``: a seeded shuffle), so the machine's drift falls
on all alike (``--batch 0``: each child does all its cycles in one turn). Stock tooz leaves every lock's lease to
expire; its child revokes each one after the timed release, so the expiries do not land on the other variants.

Reported per variant: p50, p90, p99 and mean in ms and ops/s (1 / mean: one thread's sequential rate) over all
rounds' cycles. Ratios: each patched tree / the first, patched / lockd alone, stock / patched and stock / lockd
(how many times faster lockd is), each with two 95 % intervals of the p50 ratio: cycles bootstrapped, and a
t-interval over the rounds' p50 ratios (wider: it holds child-to-child differences); and the file lock's own cost
in microseconds. The first ``--tree`` is "after" (default: this checkout), the others are "before": the first
tree's patched p50 is checked against each with ``--limit-pct`` (default 5 %): OK when the rounds' interval of
the change lies below the limit, EXCEEDED above it, else UNRESOLVED. The exit status is 0 only when every child
ran and every check is OK.

The etcd is a private single member (Debian's ``etcd`` from PATH, free loopback ports, a temporary data dir under
/tmp, or under ``--etcd-data-dir``: /dev/shm takes the disk's fsync out, which makes etcd faster and so the local
part a larger share) unless ``--backend-url`` names one. Nothing here imports this checkout's ``lockd``: only the
children import a tree's, so a tree that does not import fails its own variant, not the run.

    git worktree add /tmp/lockd-old <commit>
    .venv/bin/python bench/lockutils_patch_cost.py --tree . --tree /tmp/lockd-old [--rounds 5] [--cycles 400] [--json]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KINDS = ("file", "patched", "lockd", "stock")
CHILD_TIMEOUT = 300.0

Cycle = Callable[[str], None]
Thunk = Callable[[], None]


# --------------------------------------------------------------------------------------------------- child side


def _module_file(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__file__", None) if module is not None else None


def _stop_shim_runtime() -> None:
    """Stop the shim's coordinator (its session lease goes now, not at expiry), wherever this tree keeps it."""
    for name in ("drivers_shim.runtime", "lockd.runtime"):
        stop = getattr(sys.modules.get(name), "stop", None)
        if callable(stop):
            stop()
            return


def child_cycle(kind: str, url: str, lock_path: str, info: dict[str, Any]) -> tuple[Cycle, Thunk, Thunk]:
    """(one acquire+release of a name, untimed work after it, cleanup) for ``kind``; notes its set-up in ``info``."""
    after: Thunk = lambda: None  # noqa: E731
    cleanup: Thunk = lambda: None  # noqa: E731
    if kind in ("file", "patched"):
        if kind == "patched":
            import drivers_shim

            drivers_shim.configure(backend_url=url)
            drivers_shim.patch_lockutils()
            cleanup = _stop_shim_runtime
        from oslo_concurrency import lockutils

        info["external_lock"] = f"{lockutils.external_lock.__module__}.{lockutils.external_lock.__qualname__}"

        def cycle(lock_name: str) -> None:
            with lockutils.lock(lock_name, external=True, lock_path=lock_path):
                pass

        return cycle, after, cleanup

    from tooz import coordination

    coord = coordination.get_coordinator(url, f"bench-{kind}-{os.getpid()}".encode())
    coord.start(start_heart=True)  # as Cinder's coordination and the shim's runtime start theirs
    info["tooz_driver"] = f"{type(coord).__module__}.{type(coord).__qualname__}"
    last: list[Any] = []

    def tooz_cycle(lock_name: str) -> None:
        lock = coord.get_lock(lock_name.encode())
        if not lock.acquire():
            raise RuntimeError(f"{kind}: uncontended acquire of {lock_name!r} returned False")
        if lock.release() is False:
            raise RuntimeError(f"{kind}: release of {lock_name!r} returned False")
        last[:] = [lock]

    if kind == "stock":

        def after() -> None:
            # Stock tooz grants a lease per acquire and leaves it to expire (lock_timeout, 30 s): hundreds of
            # expiries a little later would load etcd while *other* variants run. Revoked here, outside the timing.
            lease = getattr(last[0], "_lease", None) if last else None
            if lease is not None:
                lease.revoke()

    return tooz_cycle, after, coord.stop


def serve_child(kind: str, url: str, lock_path: str, name: str, warmup: int, per_cycle: bool) -> int:
    """One variant in this process: set up, warm up, answer ``ready``; then each ``N`` line from the parent runs N
    timed acquire+release cycles and answers their nanoseconds as one JSON line; ``quit`` ends."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the parent reads only these lines
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever else prints goes to the child's stderr file
    sys.stdout = sys.stderr
    info: dict[str, Any] = {"pid": os.getpid()}
    cycle, after, cleanup = child_cycle(kind, url, lock_path, info)
    count = 0

    def next_name() -> str:
        nonlocal count
        count += 1
        return f"{name}-{count}" if per_cycle else name

    clock = time.perf_counter_ns
    try:
        for _ in range(warmup):
            cycle(next_name())
            after()
        gc.collect()
        info["imported"] = {m: _module_file(m) for m in ("drivers_shim", "lockd", "oslo_concurrency", "tooz")}
        print(json.dumps({"ready": info}), file=answers, flush=True)
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            samples: list[int] = []
            for _ in range(int(line)):
                current = next_name()
                started = clock()
                cycle(current)
                samples.append(clock() - started)
                after()
            print(json.dumps(samples), file=answers, flush=True)
    finally:
        cleanup()
    lock_files = len(os.listdir(lock_path)) if os.path.isdir(lock_path) else 0
    print(json.dumps({"lock_files_in_lock_path": lock_files}), file=answers, flush=True)
    return 0


# -------------------------------------------------------------------------------------------------- parent side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateEtcd:
    """One single-member etcd from PATH on free loopback ports, data in ``state``; stopped by its PID."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.client_url = f"http://127.0.0.1:{free_port()}"
        self.peer_url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Start etcd and wait until it is healthy; returns ``host:port`` of its client URL."""
        binary = shutil.which("etcd")
        if binary is None:
            raise SystemExit("no etcd on PATH (Debian: apt-get install etcd-server), or pass --backend-url")
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "etcd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name",
                    "bench",
                    "--data-dir",
                    str(self.state / "data"),
                    "--listen-client-urls",
                    self.client_url,
                    "--advertise-client-urls",
                    self.client_url,
                    "--listen-peer-urls",
                    self.peer_url,
                    "--initial-advertise-peer-urls",
                    self.peer_url,
                    "--initial-cluster",
                    f"bench={self.peer_url}",
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    f"lockutils-patch-cost-{os.getpid()}",
                    "--log-level",
                    "warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"etcd exited with {self.proc.returncode}; see {self.state / 'etcd.log'}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        return self.client_url.removeprefix("http://")
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"etcd not healthy after {timeout:g}s; see {self.state / 'etcd.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def backend_urls(url: str) -> tuple[str, str]:
    """(lockd URL, stock tooz URL) for one etcd, from ``lockd+etcd3+http://H:P[?..]``, ``etcd3+http://H:P`` or
    ``http://H:P``. lockd's query options are kept for lockd; stock tooz gets the bare endpoint."""
    parts = urllib.parse.urlsplit(url)
    transport = "https" if parts.scheme.endswith("https") else "http"
    if not parts.hostname or parts.scheme.removeprefix("lockd+").removeprefix("etcd3+") not in ("http", "https"):
        raise SystemExit(f"--backend-url {url!r}: expected lockd+etcd3+http://HOST:PORT, etcd3+http:// or http://")
    endpoint = parts.netloc
    lockd_url = url if parts.scheme.startswith("lockd+") else f"lockd+etcd3+{transport}://{endpoint}"
    return lockd_url, f"etcd3+{transport}://{endpoint}"


def describe_tree(tree: Path) -> str:
    """``<short commit>`` plus how many files under drivers_shim/ and lockd/ differ from it (read-only git)."""
    git = ["git", "--no-optional-locks", "-C", str(tree)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "drivers_shim", "lockd"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = len(status.stdout.splitlines())
    return commit.stdout.strip() + (f" + {changed} changed file(s) in drivers_shim/, lockd/" if changed else " clean")


class Variant:
    """One thing measured: a child kind, the tree its child imports (or none), and what its children collected."""

    def __init__(self, label: str, kind: str, url: str, tree: Path | None) -> None:
        self.label = label
        self.kind = kind
        self.url = url
        self.tree = tree
        self.samples: list[int] = []
        self.round_samples: list[list[int]] = []
        self.infos: list[dict[str, Any]] = []
        self.error: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_path: Path | None = None

    def start(self, args: argparse.Namespace, state: Path, round_no: int) -> None:
        """Start this round's child and wait until it has warmed up (it then waits for batches)."""
        tag = f"{self.kind}-r{round_no}-{uuid.uuid4().hex[:8]}"
        lock_path = state / "lock_path" / tag
        lock_path.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKD_") and k != "PYTHONPATH"}
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)  # ahead of site-packages and of the editable install's finder
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", self.kind, "--child-url", self.url]
        argv += ["--child-lock-path", str(lock_path), "--child-name", f"bench-lockutils-cost-{tag}"]
        argv += ["--warmup", str(args.warmup)] + (["--name-per-cycle"] if args.name_per_cycle else [])
        self.stderr_path = state / f"{tag}.stderr"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=state, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.round_samples.append([])
        ready = self._answer(round_no)
        if ready is None:
            return
        info = ready["ready"]
        if self.kind == "patched" and not info["external_lock"].startswith("drivers_shim."):
            self._fail(round_no, f"lockutils.external_lock is {info['external_lock']} after patch_lockutils()")
            return
        if self.tree is not None:
            for module in ("drivers_shim", "lockd") if self.kind == "patched" else ("lockd",):
                where = info["imported"].get(module)
                if where is None or not Path(where).resolve().is_relative_to(self.tree):
                    self._fail(round_no, f"{module} came from {where}, not from {self.tree}")
                    return
        self.infos.append(info)

    def batch(self, cycles: int, round_no: int) -> None:
        """Have the child time ``cycles`` more cycles."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{cycles}\n")
        self.proc.stdin.flush()
        samples = self._answer(round_no)
        if samples is not None:
            self.samples.extend(samples)
            self.round_samples[-1].extend(samples)

    def finish(self, round_no: int) -> None:
        """End this round's child (releasing its session), and note what it left in its lock_path."""
        if self.proc is None:
            return
        if self.error is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            last = self._answer(round_no)
            if last is not None and self.infos:
                self.infos[-1].update(last)
        if self.proc.poll() is None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _answer(self, round_no: int) -> Any:
        """The child's next JSON line; None (and the variant failed) if it died or went silent."""
        assert self.proc is not None and self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], CHILD_TIMEOUT)
        line = self.proc.stdout.readline() if readable else ""
        if not line:
            try:
                self.proc.wait(10 if readable else 0)  # at end of file it is exiting: let it say how
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._fail(round_no, f"child ended with {self.proc.returncode}" if readable else "child went silent")
            return None
        return json.loads(line)

    def _fail(self, round_no: int, what: str) -> None:
        tail = ""
        if self.stderr_path is not None and self.stderr_path.exists():
            tail = "\n    ".join(self.stderr_path.read_text(errors="replace").strip().splitlines()[-12:])
        self.error = f"round {round_no}: {what}" + (f":\n    {tail}" if tail else "")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation (as lockd.bench.stats); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(variant: Variant) -> dict[str, Any]:
    ns = variant.samples
    mean = sum(ns) / len(ns) if ns else math.nan
    return {
        "n": len(ns),
        "p50_ms": percentile(ns, 50) / 1e6,
        "p90_ms": percentile(ns, 90) / 1e6,
        "p99_ms": percentile(ns, 99) / 1e6,
        "mean_ms": mean / 1e6,
        "ops_per_s": 1e9 / mean if ns else math.nan,
        "round_p50_ms": [percentile(r, 50) / 1e6 for r in variant.round_samples if r],
    }


def bootstrap_p50_ratio(a: Sequence[int], b: Sequence[int], reps: int, rng: random.Random) -> tuple[float, float]:
    """95 % interval of p50(a) / p50(b), cycles resampled with replacement."""
    ratios = sorted(
        percentile(rng.choices(a, k=len(a)), 50) / percentile(rng.choices(b, k=len(b)), 50) for _ in range(reps)
    )
    return ratios[int(reps * 0.025)], ratios[min(reps - 1, int(reps * 0.975))]


# Student's t, two-sided 95 %, by degrees of freedom (rounds - 1); beyond the table the normal's 1.96.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def rounds_interval(values: Sequence[float]) -> list[float] | None:
    """95 % t-interval of the mean of per-round ratios: each round is an independent replicate (fresh children,
    interleaved turns), so child-to-child differences are in it, which the cycle bootstrap does not see."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    df = len(values) - 1
    t = T95[max(k for k in T95 if k <= df)] if df <= max(T95) else 1.96
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def ratio(a: Variant, b: Variant, rng: random.Random, reps: int) -> dict[str, Any]:
    """a / b at p50, p90, p99 and mean over all cycles; p50's 95 % intervals (cycles bootstrapped, and over
    rounds); each round's p50 ratio."""
    sa, sb = summary(a), summary(b)
    low, high = bootstrap_p50_ratio(a.samples, b.samples, reps, rng)
    rounds = [x / y for x, y in zip(sa["round_p50_ms"], sb["round_p50_ms"], strict=False)]
    return {
        **{k: sa[f"{k}_ms"] / sb[f"{k}_ms"] for k in ("p50", "p90", "p99", "mean")},
        "p50_ci95": [low, high],
        "round_p50": rounds,
        "round_p50_ci95": rounds_interval(rounds),
        "p50_diff_us": (sa["p50_ms"] - sb["p50_ms"]) * 1000,
        "mean_diff_us": (sa["mean_ms"] - sb["mean_ms"]) * 1000,
    }


def loadavg() -> float | None:
    """The 1-minute load average: what else ran on the machine (the children's numbers include it)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if values else "-"


def orders(variants: list[Variant], how: str, rng: random.Random) -> Iterator[list[Variant]]:
    """Endless variant orders: rotated by one each time, or shuffled."""
    for k in itertools.count():
        shift = k % len(variants)
        yield variants[shift:] + variants[:shift] if how == "rotate" else rng.sample(variants, len(variants))


def measure(args: argparse.Namespace, variants: list[Variant], state: Path) -> None:
    """All rounds: per round a fresh child per variant (started one at a time), then their cycles in interleaved
    batches, one child running at a time."""
    rng = random.Random(args.seed)
    order = orders(variants, args.order, rng)
    batch = args.batch or args.cycles
    for round_no in range(1, args.rounds + 1):
        live = [v for v in variants if v.error is None]
        try:
            for v in next(order):
                if v in live:
                    v.start(args, state, round_no)
            remaining = args.cycles
            while remaining > 0:
                n = min(batch, remaining)
                for v in next(order):
                    if v in live and v.error is None:
                        v.batch(n, round_no)
                remaining -= n
        finally:
            for v in live:
                v.finish(round_no)
        done = [
            f"{v.label} {percentile(v.round_samples[-1], 50) / 1e6:.3f}" if v.error is None else f"{v.label} FAILED"
            for v in live
        ]
        print(f"round {round_no}/{args.rounds} (p50 ms): " + ", ".join(done), file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="a source tree whose drivers_shim/lockd the patched child imports; repeat; the first is 'after' "
        f"(default: {REPO})",
    )
    parser.add_argument("--backend-url", help="an etcd to use, lockd+etcd3+http://HOST:PORT (default: a private one)")
    parser.add_argument("--etcd-data-dir", type=Path, help="where the private etcd keeps its data (default: /tmp)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs a fresh child of every variant")
    parser.add_argument("--cycles", type=int, default=400, help="timed acquire+release cycles per child")
    parser.add_argument("--batch", type=int, default=20, help="cycles per turn of a child (0: all in one turn)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed cycles first in each child")
    parser.add_argument("--order", choices=("rotate", "shuffle"), default="rotate", help="variant order per turn")
    parser.add_argument("--seed", type=int, default=1, help="for --order shuffle and the bootstrap")
    parser.add_argument("--bootstrap", type=int, default=400, help="resamples for the p50 ratios' 95 %% intervals")
    parser.add_argument("--name-per-cycle", action="store_true", help="a new lock name every cycle (default: one)")
    parser.add_argument("--limit-pct", type=float, default=5.0, help="allowed p50 slowdown of the first tree's patch")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-lock-path", help=argparse.SUPPRESS)
    parser.add_argument("--child-name", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        return serve_child(
            args.child, args.child_url, args.child_lock_path, args.child_name, args.warmup, args.name_per_cycle
        )

    trees = [t.resolve() for t in (args.tree or [REPO])]
    for tree in trees:
        if not (tree / "drivers_shim" / "__init__.py").is_file():
            parser.error(f"--tree {tree}: no drivers_shim/__init__.py there")
    if args.backend_url and args.etcd_data_dir:
        parser.error("--etcd-data-dir is for the private etcd, not with --backend-url")
    state = Path(tempfile.mkdtemp(prefix="lockd-lockutils-cost-"))
    etcd_state = Path(tempfile.mkdtemp(prefix="lockd-lockutils-cost-etcd-", dir=args.etcd_data_dir))
    etcd = None
    started = time.monotonic()
    load_start = loadavg()
    try:
        if args.backend_url:
            lockd_url, stock_url = backend_urls(args.backend_url)
        else:
            etcd = PrivateEtcd(etcd_state)
            lockd_url, stock_url = backend_urls("http://" + etcd.start())
        labels = [f"patched@{t}" for t in trees]
        labels = [lb if labels.count(lb) == 1 else f"{lb}#{labels[:i].count(lb) + 1}" for i, lb in enumerate(labels)]
        file_v = Variant("file", "file", "", None)
        patched = [Variant(lb, "patched", lockd_url, t) for lb, t in zip(labels, trees, strict=True)]
        lockd_v = Variant("lockd", "lockd", lockd_url, trees[0])
        stock_v = Variant("stock", "stock", stock_url, None)
        variants = [file_v, *patched, lockd_v, stock_v]
        measure(args, variants, state)
    finally:
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(etcd_state, ignore_errors=True)
    elapsed = time.monotonic() - started
    load_end = loadavg()

    rng = random.Random(args.seed)
    ok = [v for v in variants if v.error is None and v.samples]
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "cycles": args.cycles,
        "batch": args.batch or args.cycles,
        "warmup": args.warmup,
        "order": args.order,
        "name_per_cycle": args.name_per_cycle,
        "elapsed_s": elapsed,
        "loadavg_1min": {"start": load_start, "end": load_end},
        "backend": {"lockd": lockd_url, "stock": stock_url, "private_etcd": etcd is not None},
        "etcd_data_dir": str(etcd_state) if etcd is not None else None,
        "variants": {},
        "ratios": {},
    }
    for v in variants:
        entry: dict[str, Any] = {"kind": v.kind, "tree": str(v.tree) if v.tree else None, "error": v.error}
        if v.tree is not None:
            entry["tree_state"] = describe_tree(v.tree)
        if v.infos:
            entry["child"] = {k: val for k, val in v.infos[0].items() if k != "pid"}
        if v in ok:
            entry.update(summary(v))
        results["variants"][v.label] = entry
    ratios: dict[str, Any] = results["ratios"]
    first = patched[0] if patched[0] in ok else None
    verdicts = []
    for v in (v for v in patched if v in ok):
        if first is not None and v is not first:
            ratios[f"{v.label} / {first.label}"] = ratio(v, first, rng, args.bootstrap)
            change = ratio(first, v, rng, args.bootstrap)
            pct = (change["p50"] - 1) * 100
            basis = "rounds" if change["round_p50_ci95"] else "cycles"
            low, high = ((x - 1) * 100 for x in change["round_p50_ci95"] or change["p50_ci95"])
            verdict = "OK" if high <= args.limit_pct else "EXCEEDED" if low > args.limit_pct else "UNRESOLVED"
            verdicts.append({"after": first.label, "before": v.label, "p50_change_pct": pct,
                             "p50_change_ci95_pct": [low, high], "interval_over": basis, "round_p50_change_pct":
                             [(x - 1) * 100 for x in change["round_p50"]], "mean_change_pct":
                             (change["mean"] - 1) * 100, "p50_diff_us": change["p50_diff_us"],
                             "mean_diff_us": change["mean_diff_us"], "limit_pct": args.limit_pct,
                             "verdict": verdict})  # fmt: skip
        if lockd_v in ok:
            ratios[f"{v.label} / lockd"] = ratio(v, lockd_v, rng, args.bootstrap)
        if stock_v in ok:
            ratios[f"stock / {v.label}"] = ratio(stock_v, v, rng, args.bootstrap)
    if stock_v in ok and lockd_v in ok:
        ratios["stock / lockd"] = ratio(stock_v, lockd_v, rng, args.bootstrap)
    if file_v in ok:
        s = summary(file_v)
        results["file_lock_us"] = {"p50": s["p50_ms"] * 1000, "mean": s["mean_ms"] * 1000}
    results["limit"] = verdicts
    failed = [v for v in variants if v.error is not None]
    passed = not failed and all(v["verdict"] == "OK" for v in verdicts)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if passed else 1

    where = f"private etcd, data in {etcd_state}" if etcd is not None else "etcd"
    print(f"{args.rounds} rounds x {args.cycles} cycles (+{args.warmup} warm-up) per variant, turns of "
          f"{results['batch']} cycles, order {args.order}, "
          f"{'a new name per cycle' if args.name_per_cycle else 'one name per child'}, {os.cpu_count()} cores, "
          f"{elapsed:.0f} s (1-min load average {load_start} at the start, {load_end} at the end); "
          f"{where} at {stock_url.split('://', 1)[1]}")  # fmt: skip
    print()
    for v in variants:
        entry = results["variants"][v.label]
        print(f"{v.label}:" + (f" tree {v.tree} ({entry['tree_state']})" if v.tree is not None else ""))
        child = entry.get("child")
        if child:
            for module in ("drivers_shim", "lockd"):
                if child["imported"].get(module):
                    print(f"  {module} from {child['imported'][module]}")
            if "external_lock" in child:
                print(f"  lockutils.external_lock: {child['external_lock']}")
            else:
                print(f"  tooz driver: {child['tooz_driver']}")
            if v.kind in ("file", "patched") and "lock_files_in_lock_path" in child:
                print(f"  lock files left in lock_path: {child['lock_files_in_lock_path']}")
        if v.error:
            print(f"  FAILED {v.error}")
    print()
    width = max(len(v.label) for v in variants)
    print(f"{'variant':{width}s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s} {'ops/s':>8s}  "
          "per-round p50 ms")  # fmt: skip
    for v in ok:
        s = summary(v)
        rounds = " ".join(f"{p:.3f}" for p in s["round_p50_ms"])
        print(f"{v.label:{width}s} {s['p50_ms']:8.3f} {s['p90_ms']:8.3f} {s['p99_ms']:8.3f} {s['mean_ms']:8.3f} "
              f"{s['ops_per_s']:8.0f}  {rounds}")  # fmt: skip
    print()
    rwidth = max((len(k) for k in ratios), default=10)
    print(f"{'ratio':{rwidth}s} {'p50':>6s} {'95% CI cycles':>13s} {'95% CI rounds':>13s} {'p90':>6s} {'p99':>6s} "
          f"{'mean':>6s}  {'p50 per round':>13s}  p50 diff")  # fmt: skip
    for key, r in ratios.items():
        ci = "{:.3f}..{:.3f}".format(*r["p50_ci95"])
        ci_rounds = "{:.3f}..{:.3f}".format(*r["round_p50_ci95"]) if r["round_p50_ci95"] else "-"
        print(f"{key:{rwidth}s} {r['p50']:6.3f} {ci:>13s} {ci_rounds:>13s} {r['p90']:6.3f} {r['p99']:6.3f} "
              f"{r['mean']:6.3f}  {spread(r['round_p50']):>13s}  {r['p50_diff_us']:+8.1f} us")  # fmt: skip
    print()
    if "file_lock_us" in results:
        print(f"file lock alone (oslo lock(), external, unpatched): p50 {results['file_lock_us']['p50']:.1f} us, "
              f"mean {results['file_lock_us']['mean']:.1f} us per acquire+release")  # fmt: skip
    for d in verdicts:
        per_round = ", ".join(f"{x:+.1f}" for x in d["round_p50_change_pct"])
        print(f"{d['after']} vs {d['before']}: p50 {d['p50_change_pct']:+.2f} % ({d['p50_diff_us']:+.1f} us; "
              "95 % CI over {} {:+.2f}..{:+.2f} %; per round {} %), mean {:+.2f} % ({:+.1f} us); limit +{:g} %: "
              "{}".format(d["interval_over"], *d["p50_change_ci95_pct"], per_round, d["mean_change_pct"],
                          d["mean_diff_us"], d["limit_pct"], d["verdict"]))  # fmt: skip
    for v in failed:
        print(f"{v.label}: FAILED, not in the ratios")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
