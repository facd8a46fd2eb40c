"""The hold history (GET /v1/history), the contention profile (GET /v1/profile, `lockd profile`) and the wait and
hold histograms of /metrics, from `lockd serve`'s watch of a real etcd, with locks taken by other processes.

- Two processes take turns on one lock: every hold is in the history with its owner (member, host, pid,
  thread), its token and ``released``; pages follow each other without gaps or repeats; filters apply; bad
  parameters are a 422 that says what is wrong.
- A hold ended by `lockd break` is recorded as ``broken``.
- Three processes take locks named with UUIDs: the profile has one template for them, with as many
  acquisitions as were made; `lockd profile --json` says what /v1/profile says; bad input exits 2.
- `lockd history` lists holds taken here (owner, token, released), newest first, the hold in progress above;
  it follows the pages up to ``--limit``; ``--name``, ``--template`` and ``--since`` (seconds ago or ISO 8601)
  filter; ``--json`` is the API's shape; bad input exits 2 with one line.
- /metrics has ``lockd_lock_wait_seconds`` and ``lockd_lock_hold_seconds`` per template, with the label set
  capped (the rest under ``template="other"``).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tooz.coordination
from prometheus_client.parser import text_string_to_metric_families

from lockd.api.profile import fold
from lockd.cli.history import read
from lockd.cli.main import main
from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer
from tests.procs import ChildProcess, WorkerProcess, wait_for

TOKEN = "history-token"


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


def api(server: ApiServer, path: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(server.url + path, params=params, timeout=5)
    answer.raise_for_status()
    return answer.json()


def contend(url: str, name: str, tmp: Path, cycles: int) -> tuple[WorkerProcess, Path]:
    log = tmp / f"{uuid.uuid4().hex}.jsonl"
    opts = {"cycles": cycles, "hold": 0.02, "history": str(log), "counter": str(tmp / f"{name}.counter")}
    return WorkerProcess(url, name, "contend", **opts), log


def finished(procs: list[WorkerProcess]) -> None:
    for proc in procs:
        assert proc.wait_event("done", timeout=60)["errors"] == []


def test_holds_from_two_processes_are_recorded_with_owner_token_and_release(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess], tmp_path: Path
) -> None:
    name = f"hist-{uuid.uuid4().hex[:10]}"
    procs = []
    logs = []
    for _ in range(2):
        proc, log = contend(etcd_url, name, tmp_path, cycles=5)
        procs.append(proc)
        logs.append(log)
    workers.extend(procs)
    finished(procs)
    made = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    assert len(made) == 10

    def all_recorded() -> list[dict[str, Any]] | None:
        holds = api(server, "/v1/history", name=name, limit=100)["holds"]
        return holds if len(holds) == len(made) else None

    holds = wait_for(all_recorded, 10, "every hold in the history")
    assert {h["token"] for h in holds} == {m["token"] for m in made}
    by_token = {m["token"]: m for m in made}
    pids = {proc.proc.pid for proc in procs}
    for hold in holds:
        owner = hold["owner"]
        assert hold["how"] == "released" and hold["name"] == name and hold["template"] == fold(name)
        assert owner["member"] == by_token[hold["token"]]["member"]
        assert owner["pid"] in pids and owner["host"] and owner["thread"]
        assert hold["held"] is not None and hold["held"] >= 0 and hold["ended"] >= hold["started"]
    assert [h["token"] for h in holds] == sorted((h["token"] for h in holds), reverse=True), "newest first"
    assert any(h["waited"] is not None for h in holds), "no wait was known from the queue entries"

    # pages of 3: every hold once, in the same order
    paged, cursor, pages = [], None, 0
    while True:
        page = api(server, "/v1/history", name=name, limit=3, **({"cursor": cursor} if cursor else {}))
        paged += page["holds"]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert [h["token"] for h in paged] == [h["token"] for h in holds] and pages == 4
    assert api(server, "/v1/history", template=fold(name))["holds"] == holds
    assert api(server, "/v1/history", name=name, since=holds[0]["ended"] + 1)["holds"] == []
    assert api(server, "/v1/history", name=f"{name}-other")["holds"] == []


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "yesterday"}, "cursor"),
        ({"since": "-5"}, "since"),
        ({"since": "noon"}, "since"),
        ({"name": "bad\tname"}, "name"),
        ({"template": "bad\ttemplate"}, "template"),
    ],
)
def test_bad_history_parameters_are_a_422_that_says_which(server: ApiServer, params: dict[str, str], says: str) -> None:
    answer = httpx.get(server.url + "/v1/history", params=params, timeout=5)
    assert answer.status_code == 422, answer.text
    assert says in json.dumps(answer.json()["detail"]), answer.text


def test_a_force_break_is_recorded_as_broken(server: ApiServer, etcd_url: str, workers: list[ChildProcess]) -> None:
    name = f"hist-break-{uuid.uuid4().hex[:10]}"
    holder = WorkerProcess(etcd_url, name, "hold")
    workers.append(holder)
    token = holder.wait_event("acquired")["token"]
    held = wait_for(lambda: api(server, "/v1/history", name=name)["held"], 10, "the hold in progress")
    assert [(h["token"], h["how"], h["ended"]) for h in held] == [(token, "held", None)]
    assert main(["break", name, "--url", server.url, "--admin-token", TOKEN]) == 0
    (hold,) = wait_for(lambda: api(server, "/v1/history", name=name)["holds"], 10, "the broken hold")
    assert (hold["token"], hold["how"], hold["owner"]["pid"]) == (token, "broken", holder.proc.pid)
    holder.finish()
    holder.wait_event("released")


def test_the_profile_folds_uuid_names_into_one_template_with_every_acquisition(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = "7" + uuid.uuid4().hex[:7]  # a digit in it: folded as an id
    names = [f"prof-{tag}-{uuid.uuid4()}-delete_volume" for _ in range(3)]
    template = fold(names[0])
    assert {fold(name) for name in names} == {template} and template.endswith("-{id}-delete_volume")
    procs = [contend(etcd_url, name, tmp_path, cycles=4)[0] for name in names]
    workers.extend(procs)
    finished(procs)

    def row() -> dict[str, Any] | None:
        rows = [r for r in api(server, "/v1/profile")["templates"] if r["template"] == template]
        return rows[0] if rows and rows[0]["acquisitions"] == 12 and rows[0]["hold_p99"] is not None else None

    found = wait_for(row, 10, "12 acquisitions under one template")
    assert not any(tag in r["template"] for r in api(server, "/v1/profile")["templates"]), "a name left unfolded"
    assert 0 <= found["hold_p50"] <= found["hold_p99"] and found["waiters"] == 0
    assert found["wait_p50"] is not None

    capsys.readouterr()
    assert main(["profile", "--url", server.url, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    from_api = api(server, "/v1/profile")
    assert said["samples"] == from_api["samples"]
    assert [r for r in said["templates"] if r["template"] == template] == [found]
    assert {r["template"] for r in said["templates"]} == {r["template"] for r in from_api["templates"]}

    assert main(["profile", "--url", server.url]) == 0
    table = capsys.readouterr().out
    assert "TEMPLATE" in table and any(line.startswith(template) and " 12 " in line for line in table.splitlines())


@pytest.mark.parametrize(
    "args",
    [["--top", "0"], ["--top", "many"], ["--sort", "name"], ["--url", "ftp://x"], ["--url", "http://h/?x", "--jsn"]],
)
def test_lockd_profile_exits_2_with_one_line_on_bad_input(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lockd.cli.main", "profile", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockd: error:"), done.stderr
    assert done.stdout == ""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``lockd ARGS`` in this process: (exit code, stdout, stderr); argparse's own errors exit by SystemExit."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    said = capsys.readouterr()
    return code, said.out, said.err


def test_lockd_history_lists_holds_follows_pages_and_filters(
    server: ApiServer, coordinator: tooz.coordination.CoordinationDriver, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = "".join(random.choices("ghijkmnpqrstuvwxyz", k=10))  # no hex digit: not folded, unique to this run
    a, b, c = (f"hcli-{tag}-{uuid.uuid4()}-{op}" for op in ("extend", "delete", "attach"))
    tokens: dict[str, list[int]] = {a: [], b: []}
    for name, times in ((a, 3), (b, 2)):
        lock = coordinator.get_lock(name.encode())
        for _ in range(times):
            assert lock.acquire()
            tokens[name].append(lock.token)
            lock.release()
    in_progress = coordinator.get_lock(c.encode())
    assert in_progress.acquire()
    try:

        def recorded() -> bool:
            counts = [len(api(server, "/v1/history", name=name)["holds"]) for name in (a, b)]
            return counts == [3, 2] and bool(api(server, "/v1/history", name=c)["held"])

        wait_for(recorded, 10, "every hold in the history")
        url = ("--url", server.url)

        code, out, err = cli(capsys, "history", *url, "--name", a)
        assert (code, err) == (0, ""), err
        header, *rows = out.splitlines()
        assert header.split() == "NAME TEMPLATE HOST PID THREAD TOKEN WAITED HELD HOW ENDED".split()
        assert len(rows) == 3 and all(row.startswith(f"{a}  {fold(a)}  ") for row in rows), out
        cells = [row.split() for row in rows]
        assert [int(cell[5]) for cell in cells] == sorted(tokens[a], reverse=True), "newest first"
        assert all(cell[3] == str(os.getpid()) and cell[4] == str(threading.get_ident()) for cell in cells), out
        assert all(cell[8] == "released" for cell in cells), out

        code, out, _ = cli(capsys, "history", *url, "--template", fold(b), "--json")
        said = json.loads(out)
        assert code == 0 and said["next"] is None and said["held"] == []
        assert [(h["name"], h["token"], h["how"]) for h in said["holds"]] == [
            (b, token, "released") for token in sorted(tokens[b], reverse=True)
        ]
        assert said["holds"] == api(server, "/v1/history", template=fold(b))["holds"]

        # pages of one hold: the CLI follows them, and stops at --limit with the cursor to go on
        whole = read(server.url, a, None, None, limit=100, page_size=1)
        assert [h.token for h in whole.holds] == sorted(tokens[a], reverse=True) and whole.next is None
        cut = read(server.url, a, None, None, limit=2, page_size=1)
        assert [h.token for h in cut.holds] == sorted(tokens[a], reverse=True)[:2] and cut.next is not None
        code, out, _ = cli(capsys, "history", *url, "--name", a, "--limit", "2")
        assert code == 0 and len(out.splitlines()) == 4 and "older holds not shown" in out, out

        # --since: seconds ago, or an ISO 8601 time (local without an offset); holds in progress always listed
        hour_ago = (datetime.datetime.now() - datetime.timedelta(hours=1)).isoformat(timespec="seconds")
        later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
        for since, count in (("3600", 3), (hour_ago, 3), (later, 0)):
            code, out, _ = cli(capsys, "history", *url, "--name", a, "--since", since, "--json")
            assert code == 0 and len(json.loads(out)["holds"]) == count, (since, out)
        code, out, _ = cli(capsys, "history", *url, "--name", a, "--since", later)
        assert code == 0 and out.startswith("no holds match"), out
        code, out, _ = cli(capsys, "history", *url, "--name", c, "--since", later, "--json")
        (now,) = json.loads(out)["held"]
        assert (now["token"], now["how"], now["ended"]) == (in_progress.token, "held", None)
        code, out, _ = cli(capsys, "history", *url, "--name", c)
        assert code == 0 and out.splitlines()[1].split()[8] == "held", out
    finally:
        in_progress.release()


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "noon"],
        ["--since", "-5"],
        ["--since", "1969-12-31T00:00:00Z"],
        ["--limit", "0"],
        ["--limit", "many"],
        ["--name", "bad\tname"],
        ["--template", "bad\ttemplate"],  # the server's 422
        ["--url", "ftp://x"],
    ],
)
def test_lockd_history_exits_2_with_one_line_on_bad_input(
    server: ApiServer, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "history", "--url", server.url, *args)
    assert code == 2 and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockd: error:"), err


def test_metrics_have_wait_and_hold_histograms_with_a_bounded_template_set(etcd: EtcdMember, etcd_url: str) -> None:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        srv.app.state.metrics.template_labels = 2
        tag = "7" + uuid.uuid4().hex[:7]  # a digit in it: folded as an id
        coordinator = tooz.coordination.get_coordinator(etcd_url, f"metrics-{tag}".encode())
        coordinator.start()
        try:
            for k in range(5):
                lock = coordinator.get_lock(f"met-{tag}-{k}-{uuid.uuid4()}".encode())
                assert lock.acquire()
                lock.release()
        finally:
            coordinator.stop()

        def counts(family: str) -> dict[str, float]:
            out: dict[str, float] = {}
            for fam in text_string_to_metric_families(httpx.get(srv.url + "/metrics", timeout=5).text):
                for sample in fam.samples:
                    if sample.name == f"{family}_count":
                        out[sample.labels["template"]] = sample.value
            return out

        holds = wait_for(lambda: (c := counts("lockd_lock_hold_seconds")) and sum(c.values()) >= 5 and c, 10, "holds")
        waits = counts("lockd_lock_wait_seconds")
        print(f"\nhold counts by template: {holds}\nwait counts by template: {waits}")
        for seen in (holds, waits):
            assert len(seen) <= 3 and "other" in seen, seen
            assert all(t == "other" or t.startswith("met-") and t.endswith("-{id}") for t in seen), seen
            assert not any(tag in t for t in seen), "a lock name became a label"
        assert sum(waits.values()) >= 5
        assert "lockd_deadlocks 0.0" in httpx.get(srv.url + "/metrics", timeout=5).text


def test_the_console_draws_the_timeline_and_the_hot_locks_from_the_same_read_model(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess], tmp_path: Path
) -> None:
    name = f"tl-{uuid.uuid4()}"
    procs = [contend(etcd_url, name, tmp_path, cycles=3)[0] for _ in range(2)]
    workers.extend(procs)
    finished(procs)
    holds = wait_for(lambda: len(h := api(server, "/v1/history", name=name)["holds"]) == 6 and h, 10, "6 holds")
    page = httpx.get(server.url + "/ui/timeline", params={"prefix": name, "by": "lock"}, timeout=5)
    assert page.status_code == 200
    assert f'data-row="{name}"' in page.text and page.text.count(" data-hold x=") == 6
    for hold in holds:
        assert f"token {hold['token']}, " in page.text and f"pid {hold['owner']['pid']} " in page.text
    by_host = httpx.get(server.url + "/ui/timeline", params={"prefix": name, "by": "host"}, timeout=5).text
    assert f'data-row="{holds[0]["owner"]["host"]}"' in by_host
    template = "tl-{id}"
    hot = httpx.get(server.url + "/ui/hot", timeout=5)
    assert hot.status_code == 200 and f'data-template="{template}"' in hot.text
    for bad in ({"minutes": "7"}, {"by": "planet"}, {"prefix": "a\tb"}):
        assert httpx.get(server.url + "/ui/timeline", params=bad, timeout=5).status_code == 422, bad
