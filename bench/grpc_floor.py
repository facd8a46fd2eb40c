"""The uncontended floor of an etcd lock, two txns (put-if-absent, delete), over gRPC and over the JSON gateway.

A measurement for docs/transport.md (issue 14), not a test: is the transport chosen for its unary cost? Both
clients talk to one private etcd in one run, one kept-alive connection each, samples interleaved in batches
of 50 with the order alternated, so machine noise falls on both alike:

- ``grpc``: grpcio, one channel, ``/etcdserverpb.KV/Txn`` from bench/etcd_txn.proto (a subset of etcd's
  rpc.proto, compiled here at run time with grpcio-tools, so nothing generated is committed);
- ``gateway``: ``POST /v3/kv/txn`` with JSON over one ``http.client`` connection (lockd.bench.targets'
  etcd-floor target, what ``lockd bench`` calls the floor).

    .venv/bin/pip install -e '.[transport-probe]'
    .venv/bin/python bench/grpc_floor.py [--cycles 2000] [--backend-url lockd+etcd3+http://HOST:PORT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lockd.bench.etcd import LocalEtcd  # noqa: E402
from lockd.bench.stats import latency_summary  # noqa: E402
from lockd.bench.targets import FloorBackend, parse_endpoint  # noqa: E402

BATCH = 50


def compile_proto(out: Path) -> tuple[Any, Any]:
    """(etcd_txn_pb2, etcd_txn_pb2_grpc) generated into ``out`` from bench/etcd_txn.proto."""
    from grpc_tools import protoc

    args = ["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}", str(HERE / "etcd_txn.proto")]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on bench/etcd_txn.proto")
    sys.path.insert(0, str(out))
    return importlib.import_module("etcd_txn_pb2"), importlib.import_module("etcd_txn_pb2_grpc")


class GrpcFloor:
    """put-if-absent then delete over one gRPC channel."""

    def __init__(self, endpoint: str, pb: Any, pb_grpc: Any) -> None:
        import grpc

        self.channel = grpc.insecure_channel(endpoint)
        self.kv = pb_grpc.KVStub(self.channel)
        key = b"/lockd/bench/grpc-floor/key"
        absent = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=0)
        self.put = pb.TxnRequest(
            compare=[absent], success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"x"))]
        )
        self.delete = pb.TxnRequest(success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))])

    def cycle(self) -> None:
        if not self.kv.Txn(self.put, timeout=10).succeeded:
            raise RuntimeError("grpc floor: the put-if-absent failed (key left over?)")
        self.kv.Txn(self.delete, timeout=10)


class GatewayFloor:
    def __init__(self, endpoint: str) -> None:
        self.backend = FloorBackend(endpoint)
        self.lock = self.backend.lock("gateway-floor")

    def cycle(self) -> None:
        if not self.lock.acquire():
            raise RuntimeError("gateway floor: the put-if-absent failed (key left over?)")
        self.lock.release()


def measure(endpoint: str, cycles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockd-grpc-floor-") as out:
        pb, pb_grpc = compile_proto(Path(out))
        targets = {"grpc": GrpcFloor(endpoint, pb, pb_grpc), "gateway": GatewayFloor(endpoint)}
        for target in targets.values():
            for _ in range(50):  # warm-up: connections, caches
                target.cycle()
        samples: dict[str, list[float]] = {name: [] for name in targets}
        order = list(targets)
        while len(samples["grpc"]) < cycles:
            for name in order:
                cycle = targets[name].cycle
                for _ in range(BATCH):
                    started = time.perf_counter()
                    cycle()
                    samples[name].append(time.perf_counter() - started)
            order.reverse()
    result = {name: latency_summary(values) for name, values in samples.items()}
    result["grpc_vs_gateway_p50"] = result["grpc"]["p50_ms"] / result["gateway"]["p50_ms"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000, help="acquire+release cycles per transport")
    parser.add_argument("--backend-url", help="an etcd to use (default: start a private one)")
    args = parser.parse_args()
    if args.backend_url:
        result = measure(parse_endpoint(args.backend_url), args.cycles)
    else:
        with LocalEtcd() as etcd:
            result = measure(etcd.endpoint, args.cycles)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
