"""Every CLI failure is one line on stderr with exit 2 (usage) or 1 (runtime), in a real subprocess.

A subprocess, because what breaks this is import-time noise (e.g. eventlet's deprecation notice, pulled in by
tooz -> futurist where eventlet is installed, as it is beside Cinder) that pytest would swallow.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.etcd_process import free_port


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["bench", "--processes", "-1"], 2),
        (["no-such-command"], 2),
        (["locks", "--url", f"http://127.0.0.1:{free_port()}"], 1),
        (["break", "x" * 600, "--url", f"http://127.0.0.1:{free_port()}"], 2),
        (["epoch"], 2),
        (["epoch", "show", "--backend-url", ""], 2),
        (["epoch", "adopt", "--backend-url", "lockd+etcd3+http://127.0.0.1:1", "--id", "v1"], 2),
        (["epoch", "show", "--backend-url", "ftp://nowhere"], 2),
        (["epoch", "show", "--backend-url", f"lockd+etcd3+http://127.0.0.1:{free_port()}?timeout=1"], 1),
        (
            [
                "serve",
                "--port",
                str(free_port()),
                "--backend-url",
                "lockd+etcd3+https://127.0.0.1:1?ca_cert=/no/ca.pem",
            ],
            2,
        ),
        (["history", "--since", "noon"], 2),
    ],
)
def test_failures_print_one_line(args: list[str], code: int) -> None:
    out = subprocess.run([sys.executable, "-m", "lockd.cli.main", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("lockd")
