"""The api never logs a token: Jupyter clients send it in the websocket URL's query string,
which uvicorn's access and websocket lines would otherwise print in clear."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import websockets

from kernelbus.logs import RedactTokens, redact
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration

TOKEN = "s3cret-Token_value-9"


def test_redact_query_tokens() -> None:
    assert redact("GET /api/kernels?token=abc&x=1") == "GET /api/kernels?token=[redacted]&x=1"
    assert redact("/x?a=1&Token=abc") == "/x?a=1&Token=[redacted]"
    assert redact("/x?access_token=abc") == "/x?access_token=[redacted]"
    assert redact("/x?tokens=1&notoken=2") == "/x?tokens=1&notoken=2"


def test_filter_rewrites_uvicorn_style_records() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", f"/ws?token={TOKEN}"),
        None,
    )
    RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()


async def test_websocket_and_rest_urls_with_tokens_are_logged_redacted(
    services: Services,
) -> None:
    services.worker()
    api = services.api(token=TOKEN)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        created = await client.post(f"/api/kernels?token={TOKEN}", json={})
        assert created.status_code == 201, created.text
        kernel_id = created.json()["id"]
        url = f"{api.ws_url}/api/kernels/{kernel_id}/channels?session_id=s1&token={TOKEN}"
        async with websockets.connect(url) as ws:
            request = {
                "header": {
                    "msg_id": "m1",
                    "msg_type": "kernel_info_request",
                    "session": "s1",
                    "username": "",
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "content": {},
                "channel": "shell",
            }
            await ws.send(json.dumps(request))
            while json.loads(await ws.recv())["msg_type"] != "kernel_info_reply":
                pass
        assert (await client.delete(f"/api/kernels/{kernel_id}?token={TOKEN}")).status_code == 204
    log = api.service.log()
    assert "[redacted]" in log and "WebSocket" in log
    assert TOKEN not in log
