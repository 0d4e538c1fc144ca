"""Token checks shared by REST and websocket handshakes."""

from __future__ import annotations

import pytest

from kernelbus_api.auth import check_token, token_ok
from kernelbus_api.settings import ApiSettings


def _settings(token: str) -> ApiSettings:
    return ApiSettings(auth_token=token)


@pytest.mark.parametrize(
    "header", ["token s3cret", "Token s3cret", "bearer s3cret", "BEARER s3cret", " token  s3cret "]
)
def test_token_and_bearer_schemes_are_accepted(header: str) -> None:
    assert token_ok(_settings("s3cret"), header, None)


@pytest.mark.parametrize(
    "header", [None, "", "token", "token wrong", "basic s3cret", "s3cret", "tokens3cret"]
)
def test_wrong_or_missing_tokens_are_refused(header: str | None) -> None:
    assert not token_ok(_settings("s3cret"), header, None)


def test_query_token_is_accepted_and_takes_precedence() -> None:
    assert token_ok(_settings("s3cret"), None, "s3cret")
    assert not token_ok(_settings("s3cret"), "token s3cret", "wrong")


@pytest.mark.parametrize("header", [None, "", "token", "token anything", "garbage"])
def test_auth_off_ignores_the_header(header: str | None) -> None:
    assert token_ok(_settings(""), header, None)


def test_check_token_reads_headers_and_query() -> None:
    settings = _settings("t")
    assert check_token({"authorization": "token t"}, {}, settings)
    assert check_token({}, {"token": "t"}, settings)
    assert not check_token({}, {}, settings)
