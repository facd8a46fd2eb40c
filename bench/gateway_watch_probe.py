"""Can etcd's JSON gateway carry several watches on one connection? A probe, not a test (issue 14).

Each probe opens one connection to ``/v3/watch`` on a private etcd, sends a first ``create_request`` (key A),
waits for the answer, sends a second one (key B) on the same stream, then writes A and B through another
connection and records what came back, with times. A probe "multiplexes" when both watches are created and
both events arrive while the stream is still open:

- ``http1-chunked``: HTTP/1.1, ``Transfer-Encoding: chunked`` request body that stays open (http.client);
- ``http1-chunked-padded``: the same, with 300 KiB of JSON whitespace after the first request (see
  docs/transport.md: Go's HTTP/1 server discards up to 256 KiB of unread body before it sends the headers);
- ``h2c``: HTTP/2 without TLS (prior knowledge, the ``h2`` library) to the same port;
- ``websocket``: the gateway's WebSocket upgrade of ``/v3/watch`` (grpc-websocket-proxy), one message per request;
- ``h2-tls``: HTTP/2 over TLS (ALPN) to an etcd started with a self-signed certificate: one stream carrying two
  creates, and 50 watch streams on one connection.

    .venv/bin/pip install -e '.[transport-probe]'
    .venv/bin/python bench/gateway_watch_probe.py [--json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.etcd_process import etcd_binary, free_port  # noqa: E402

WAIT = 3.0  # seconds to wait for an answer that should take a millisecond


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create(key: bytes, watch_id: int) -> bytes:
    return json.dumps({"create_request": {"key": b64(key), "watch_id": watch_id}}).encode()


class Etcd:
    """A throwaway single-member etcd, plain or with a self-signed certificate."""

    def __init__(self, tls: bool = False) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lockd-probe-etcd-")
        self.port, peer = free_port(), free_port()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        args = [
            etcd_binary(), "--name", "probe", "--data-dir", f"{self.dir.name}/data",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"probe=http://127.0.0.1:{peer}",
        ]  # fmt: skip
        if tls:
            cert, key = f"{self.dir.name}/cert.pem", f"{self.dir.name}/key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                check=True, capture_output=True,
            )  # fmt: skip
            args += ["--cert-file", cert, "--key-file", key]
        self.log = open(f"{self.dir.name}/etcd.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.put(b"/probe/ready", b"1")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("etcd did not start")

    def ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def put(self, key: bytes, value: bytes) -> None:
        if self.url.startswith("https"):
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=5, context=self.ssl_context()
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("POST", "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(value)}).encode())
        conn.getresponse().read()
        conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        self.dir.cleanup()


class Recorder:
    """Lines read off a stream, with the time since the probe started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()

    def add(self, raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"raw": str(raw)[:200]}
        with self.cond:
            self.lines.append((round(time.monotonic() - self.started, 3), message))
            self.cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(predicate(m) for _, m in self.lines), timeout)

    def summary(self) -> dict[str, Any]:
        results = [m.get("result", {}) for _, m in self.lines]
        created = sorted({int(r.get("watch_id", 0)) for r in results if r.get("created")})
        events: dict[str, int] = {}
        for _, m in self.lines:
            for ev in m.get("result", {}).get("events", []) or []:
                key = base64.b64decode(ev["kv"]["key"]).decode()
                events[key] = events.get(key, 0) + 1
        return {"created_watch_ids": created, "events": events, "first_lines": self.lines[:6]}


def created(watch_id: int) -> Any:
    return lambda m: m.get("result", {}).get("created") and int(m["result"].get("watch_id", 0)) == watch_id


def event_on(key: bytes) -> Any:
    return lambda m: any(base64.b64decode(ev["kv"]["key"]) == key for ev in (m.get("result", {}).get("events") or []))


def _two_watches(etcd: Etcd, send: Any, rec: Recorder, key_a: bytes, key_b: bytes) -> dict[str, Any]:
    """The common script: create A, wait, create B, wait, write A and B, wait for both events."""
    out: dict[str, Any] = {}
    try:
        send(create(key_a, 1))
        out["a_created"] = rec.wait_for(created(1))
        send(create(key_b, 2))
        out["b_created"] = rec.wait_for(created(2))
    except Exception as exc:  # e.g. the server reset the stream
        out["send_error"] = repr(exc)
        out["multiplexes"] = False
        return out
    etcd.put(key_a, b"x")
    etcd.put(key_b, b"x")
    out["a_event"] = rec.wait_for(event_on(key_a))
    out["b_event"] = rec.wait_for(event_on(key_b))
    out["multiplexes"] = all(out[k] for k in ("a_created", "b_created", "a_event", "b_event"))
    return out


def probe_http1_chunked(etcd: Etcd, padding: int = 0) -> dict[str, Any]:
    rec = Recorder()
    sock = socket.create_connection(("127.0.0.1", etcd.port), timeout=30)
    head = (
        f"POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1:{etcd.port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())

    def send(body: bytes) -> None:
        sock.sendall(b"%x\r\n%s\r\n" % (len(body), body))

    def reader() -> None:
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            rec.add(json.dumps({"http_status": response.status}))
            while line := response.readline():
                rec.add(line)
        except (OSError, http.client.HTTPException) as exc:
            rec.add(json.dumps({"reader_error": repr(exc)}))

    threading.Thread(target=reader, daemon=True).start()
    key_a, key_b = b"/probe/h1/a", b"/probe/h1/b"
    if padding:
        send(create(key_a, 1) + b" " * padding)
        out: dict[str, Any] = {"a_created": rec.wait_for(created(1))}
        send(create(key_b, 2))
        out["b_created"] = rec.wait_for(created(2))
        etcd.put(key_a, b"x")
        etcd.put(key_b, b"x")
        out["a_event"] = rec.wait_for(event_on(key_a))
        out["b_event"] = rec.wait_for(event_on(key_b))
        out["multiplexes"] = all(out[k] for k in ("a_created", "b_created", "a_event", "b_event"))
    else:
        out = _two_watches(etcd, send, rec, key_a, key_b)
    sock.sendall(b"0\r\n\r\n")  # end of body: what does the gateway say now?
    time.sleep(1.0)
    out["after_body_end"] = rec.summary()
    sock.close()
    return out


def probe_websocket(etcd: Etcd) -> dict[str, Any]:
    import websocket

    rec = Recorder()
    ws = websocket.create_connection(f"ws://127.0.0.1:{etcd.port}/v3/watch", timeout=30)

    def reader() -> None:
        try:
            while True:
                rec.add(ws.recv())
        except Exception as exc:
            rec.add(json.dumps({"reader_error": repr(exc)}))

    threading.Thread(target=reader, daemon=True).start()
    out = _two_watches(etcd, lambda body: ws.send(body.decode()), rec, b"/probe/ws/a", b"/probe/ws/b")
    # Many watches on one socket: 200 more creates, then one write per key.
    many = 200
    for i in range(many):
        ws.send(create(b"/probe/ws/many/%d" % i, 100 + i).decode())
    out["many_created"] = all(rec.wait_for(created(100 + i), 5) for i in range(many))
    sent = time.monotonic()
    for i in range(many):
        etcd.put(b"/probe/ws/many/%d" % i, b"x")
    out["many_events"] = all(rec.wait_for(event_on(b"/probe/ws/many/%d" % i), 5) for i in range(many))
    out["many"] = many
    out["many_puts_to_last_event_s"] = round(time.monotonic() - sent, 3)
    out["summary"] = {k: v for k, v in rec.summary().items() if k != "events"}
    ws.close()
    return out


def _h2_session(etcd: Etcd, tls: bool) -> tuple[Any, Any, Recorder, dict[int, Recorder]]:
    import h2.config
    import h2.connection
    import h2.events

    raw = socket.create_connection(("127.0.0.1", etcd.port), timeout=30)
    if tls:
        sock = etcd.ssl_context(["h2"]).wrap_socket(raw, server_hostname="127.0.0.1")
        negotiated = sock.selected_alpn_protocol()
    else:
        sock, negotiated = raw, "prior knowledge"
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    main = Recorder()
    main.add(json.dumps({"alpn": negotiated}))
    streams: dict[int, Recorder] = {}
    lock = threading.Lock()

    def reader() -> None:
        buffers: dict[int, bytes] = {}
        try:
            while data := sock.recv(65536):
                with lock:
                    events = conn.receive_data(data)
                    pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
                for ev in events:
                    rec = streams.get(getattr(ev, "stream_id", 0) or 0, main)
                    if isinstance(ev, h2.events.ResponseReceived):
                        rec.add(json.dumps({"headers": {k.decode(): v.decode() for k, v in ev.headers}}))
                    elif isinstance(ev, h2.events.DataReceived):
                        with lock:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                            pending = conn.data_to_send()
                        if pending:
                            sock.sendall(pending)
                        buffers[ev.stream_id] = buffers.get(ev.stream_id, b"") + ev.data
                        *lines, buffers[ev.stream_id] = buffers[ev.stream_id].split(b"\n")
                        for line in lines:
                            if line.strip():
                                rec.add(line)
                    elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        rec.add(json.dumps({"h2": type(ev).__name__, "detail": str(ev)[:200]}))
        except Exception as exc:
            main.add(json.dumps({"reader_error": repr(exc)}))

    threading.Thread(target=reader, daemon=True).start()

    class Sender:
        def open(self, rec: Recorder) -> int:
            with lock:
                stream_id = conn.get_next_available_stream_id()
                streams[stream_id] = rec
                conn.send_headers(
                    stream_id,
                    [(":method", "POST"), (":path", "/v3/watch"), (":scheme", "https" if tls else "http"),
                     (":authority", f"127.0.0.1:{etcd.port}"), ("content-type", "application/json")],
                )  # fmt: skip
                sock.sendall(conn.data_to_send())
            return stream_id

        def send(self, stream_id: int, body: bytes) -> None:
            with lock:
                conn.send_data(stream_id, body)
                sock.sendall(conn.data_to_send())

    return Sender(), sock, main, streams


def probe_h2(etcd: Etcd, tls: bool) -> dict[str, Any]:
    try:
        sender, sock, main, _ = _h2_session(etcd, tls)
    except Exception as exc:
        return {"multiplexes": False, "error": repr(exc)}
    rec = Recorder()
    stream_id = sender.open(rec)
    out = _two_watches(
        etcd, lambda body: sender.send(stream_id, body), rec, b"/probe/h2/%d/a" % tls, b"/probe/h2/%d/b" % tls
    )
    out["stream"] = rec.summary()
    if out["multiplexes"]:
        # 50 streams on the same connection, one watch each
        recs = [Recorder() for _ in range(50)]
        ids = [sender.open(r) for r in recs]
        for i, sid in enumerate(ids):
            sender.send(sid, create(b"/probe/h2/streams/%d" % i, 1))
        out["streams_created"] = all(r.wait_for(created(1), 5) for r in recs)
        for i in range(50):
            etcd.put(b"/probe/h2/streams/%d" % i, b"x")
        out["streams_events"] = all(r.wait_for(event_on(b"/probe/h2/streams/%d" % i), 5) for i, r in enumerate(recs))
    out["connection"] = main.summary()["first_lines"]
    sock.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    etcd = Etcd()
    try:
        results["etcd"] = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[:3]
        results["http1-chunked"] = probe_http1_chunked(etcd)
        results["http1-chunked-padded"] = probe_http1_chunked(etcd, padding=300 * 1024)
        results["h2c"] = probe_h2(etcd, tls=False)
        results["websocket"] = probe_websocket(etcd)
    finally:
        etcd.stop()
    etcd = Etcd(tls=True)
    try:
        results["h2-tls"] = probe_h2(etcd, tls=True)
    finally:
        etcd.stop()
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for name, result in results.items():
            if name == "etcd":
                print("etcd:", " / ".join(result))
                continue
            flags = {k: v for k, v in result.items() if isinstance(v, (bool, int, float))}
            print(f"{name:22} {json.dumps(flags)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
