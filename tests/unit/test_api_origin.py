"""The origin check (PROTOCOLS §1.1) and the host it compares against behind a proxy."""

from __future__ import annotations

import pytest

from kernelbus_api.origin import origin_allowed, request_host
from kernelbus_api.settings import ApiSettings


def _settings(**values: str) -> ApiSettings:
    return ApiSettings.model_validate(values)


def test_origin_must_match_the_host_unless_allow_listed() -> None:
    settings = _settings()
    assert origin_allowed(settings, None, "kb:8888")
    assert origin_allowed(settings, "http://kb:8888", "kb:8888")
    assert origin_allowed(settings, "http://KB:8888", "kb:8888")
    assert not origin_allowed(settings, "http://other:8888", "kb:8888")
    assert not origin_allowed(settings, "http://kb:8888", None)
    listed = _settings(allow_origin="http://lab.example, http://x")
    assert origin_allowed(listed, "http://lab.example", "kb:8888")
    assert origin_allowed(_settings(allow_origin="*"), "http://anything", None)


FORWARDED = {"host": "10.0.0.5:8888", "x-forwarded-host": "nb.example.org, inner"}


@pytest.mark.parametrize(
    ("proxies", "peer", "expected"),
    [
        ("", "10.0.0.1", "10.0.0.5:8888"),  # no proxy trusted: Host
        ("10.0.0.1", "10.0.0.1", "nb.example.org"),  # the first forwarded host
        ("10.0.0.1, 10.0.0.2", "10.0.0.2", "nb.example.org"),
        ("10.0.0.1", "10.0.0.9", "10.0.0.5:8888"),  # another peer: its header is ignored
        ("10.0.0.1", None, "10.0.0.5:8888"),
        ("*", "192.0.2.7", "nb.example.org"),
    ],
)
def test_forwarded_host_counts_only_from_trusted_proxies(
    proxies: str, peer: str | None, expected: str
) -> None:
    assert request_host(_settings(trusted_proxies=proxies), FORWARDED, peer) == expected


def test_without_a_forwarded_header_the_host_is_used() -> None:
    settings = _settings(trusted_proxies="*")
    assert request_host(settings, {"host": "kb:8888"}, "10.0.0.1") == "kb:8888"


def test_trusted_proxies_rejects_anything_but_addresses() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        _settings(trusted_proxies="proxy.example; rm")
