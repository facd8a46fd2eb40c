"""Backend URL parsing: the public option names map onto lockd's internal ones, bad input is a UsageError."""

from __future__ import annotations

import pytest

import drivers_shim
from lockd import runtime
from lockd.errors import UsageError
from lockd.options import DEFAULT_LEASE_TTL, check_backend_url, parse_backend_url


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


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("bogus://x", "scheme 'bogus' is not a lock backend installed here"),
        ("no-scheme-at-all", "is not a URL"),
        ("lockd+etcd3+http://h:1?lease_ttl=0", "lease_ttl"),
        ("bogus://user:s3cret@db/x", "scheme 'bogus'"),
    ],
)
def test_a_url_that_cannot_name_a_backend_is_a_usage_error_naming_its_source(url: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_backend_url(url, "LOCKD_BACKEND_URL")
    message = str(caught.value)
    assert message.startswith("LOCKD_BACKEND_URL") and says in message, message
    assert "s3cret" not in message  # only the scheme is echoed: another driver's URL may carry a password
    if "installed here" in message:  # and what would have worked
        assert "lockd+etcd3+http" in message and "etcd3+http" in message and "file" in message


@pytest.mark.parametrize("url", ["lockd+etcd3+http://h:2379?lease_ttl=5", "etcd3+http://h:2379", "file:///tmp/x"])
def test_lockd_and_installed_tooz_urls_pass(url: str) -> None:
    assert check_backend_url(url) == url


def test_configure_refuses_a_bad_url_and_keeps_the_settings_in_force() -> None:
    runtime.configure(backend_url="file:///tmp/locks", prefix="x-")
    try:
        with pytest.raises(UsageError, match=r"drivers_shim.configure\(backend_url=...\) scheme 'bogus'"):
            drivers_shim.configure(backend_url="bogus://x")
        assert runtime.settings().backend_url == "file:///tmp/locks" and runtime.settings().prefix == "x-"
    finally:
        runtime.configure()


def test_a_bad_url_from_the_environment_is_named_at_the_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKD_BACKEND_URL", "bogus://x")
    with pytest.raises(UsageError, match="^LOCKD_BACKEND_URL scheme 'bogus'"):
        runtime.backend_url()
    with pytest.raises(UsageError, match="^LOCKD_BACKEND_URL scheme 'bogus'"):
        runtime.check_environment()
