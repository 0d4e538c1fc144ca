"""The kernelbus-nats image's entry point (`deploy/nats/entrypoint.sh`) hands compose's NATS
passwords to nats-server literally, whatever they look like.

nats.conf names each password by variable (`password: $KERNELBUS_NATS_API_PASSWORD`) and
nats-server parses a variable's value as configuration text, so without the entry point a
password such as `12-x...` stopped the server (a date that does not parse) and `$HOME` was
refused at login. Run here with the suite's nats-server under the host's /bin/sh and compose's
own users (rendered by deploy/nats/render.py); the image's busybox sh runs it in the compose
tests, with a password of the same kind.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import nats.errors
import pytest
from nats_deploy_support import NATS_DIR, render_module

from kernelbus import natsserver, processes

pytestmark = pytest.mark.integration

ENTRYPOINT = NATS_DIR / "entrypoint.sh"

AWKWARD = [
    "12-x7Qa",  # a date to nats-server, unquoted
    "3.x9",  # a float
    "on",  # a boolean
    "-5",
    "[a]",
    "a b#c;{}",
    'x"y',
    "a\\b",
    "a\\tb",  # a backslash and a t, not a tab
    "$HOME",  # another variable, unquoted
    "${HOME}",
    "'q'",
    "ünïcödé",
    "kZq-_9",
]


@contextmanager
def entrypoint_server(
    root: Path, passwords: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """nats-server started through the entry point with compose's users, and its port (not
    listening yet)."""
    render = render_module()
    users = render.load()
    port = natsserver.free_port()
    block = render.authorization_block(users, render.env_password)
    config = natsserver.write_config(root, port, block, jetstream=False)
    env = {
        "PATH": f"{Path(natsserver.find_binary()).parent}:/usr/bin:/bin",
        **{spec["password_env"]: passwords[user] for user, spec in users.items()},
    }
    process = subprocess.Popen(
        ["/bin/sh", str(ENTRYPOINT), "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process, port
    finally:
        processes.terminate(process, 10)
        if process.stdout is not None:
            process.stdout.close()


async def _login(port: int, user: str, password: str) -> None:
    nc = await nats.connect(
        f"nats://127.0.0.1:{port}",
        user=user,
        password=password,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=5,
    )
    await nc.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 15
    while not _listening(port):
        assert process.poll() is None, process.communicate()[0].decode()
        assert time.monotonic() < deadline, "nats-server did not listen"
        time.sleep(0.05)


@pytest.mark.parametrize("password", AWKWARD)
async def test_a_password_of_any_shape_logs_in(tmp_path: Path, password: str) -> None:
    passwords = {"api": password, "worker": "w" + password, "culler": "c1", "events": "e1"}
    with entrypoint_server(tmp_path, passwords) as (process, port):
        _wait_listening(process, port)
        await _login(port, "api", password)
        await _login(port, "worker", "w" + password)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _login(port, "api", password + "x")


def test_a_password_with_a_control_character_is_refused_before_nats_starts(
    tmp_path: Path,
) -> None:
    passwords = {"api": "two\nlines", "worker": "w1", "culler": "c1", "events": "e1"}
    with entrypoint_server(tmp_path, passwords) as (process, port):
        output, _ = process.communicate(timeout=15)
        assert process.returncode == 64
        assert not _listening(port)
    text = output.decode()
    assert "KERNELBUS_NATS_API_PASSWORD contains a control character" in text
    assert "two" not in text  # the password itself is never printed
