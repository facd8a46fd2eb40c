"""Backend URL parsing: the public option names map onto lockd's internal ones, bad input is a UsageError."""

from __future__ import annotations

import pytest

from lockd.errors import UsageError
from lockd.options import DEFAULT_LEASE_TTL, parse_backend_url


def test_defaults() -> None:
    opts = parse_backend_url("lockd+etcd3+http://10.0.0.1:2379")
    assert opts.endpoints == (("10.0.0.1", 2379),)
    assert opts.lease_ttl == DEFAULT_LEASE_TTL
    assert not opts.https


def test_query_options_and_endpoints() -> None:
    opts = parse_backend_url("lockd+etcd3+https://h1:1?lease_ttl=4&timeout=0.5&endpoints=h2:2,h3:3,h1:1&ca_cert=/ca")
    assert opts.endpoints == (("h1", 1), ("h2", 2), ("h3", 3))
    assert (opts.lease_ttl, opts.request_timeout, opts.https, opts.ca_cert) == (4.0, 0.5, True, "/ca")


def test_keyword_options_win_over_the_query() -> None:
    assert parse_backend_url("lockd+etcd3+http://h?lease_ttl=4", {"lease_ttl": ["7"]}).lease_ttl == 7.0


@pytest.mark.parametrize(
    "url",
    [
        "etcd3+http://h:1",
        "lockd+etcd3+http://h:1?lease_ttl=0",
        "lockd+etcd3+http://h:1?lease_ttl=abc",
        "lockd+etcd3+http://h:1?lease_ttl=inf",
        "lockd+etcd3+http://h:1?timeout=-1",
        "lockd+etcd3+http://h:1?endpoints=h2:notaport",
        "lockd+etcd3+http://h:1?bogus=1",
        "lockd+etcd3+http://h:99999",
    ],
)
def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        parse_backend_url(url)
