"""Listing the keys of a JetStream KV bucket without nats-py's `KeyValue.keys()` race.

`keys()` opens an ordered watcher and treats "consumer info says nothing pending and no
message received yet" as an empty bucket. The server can report the last message as delivered
before it reaches the client, so under load (or with concurrent calls) `keys()` raises
`NoKeysError` for a bucket that has keys: the api then saw no live worker and answered 503.
Asking the stream for its subjects has no such window.
"""

from __future__ import annotations

from nats.js.kv import KeyValue


async def kv_keys(kv: KeyValue) -> list[str]:
    """Keys that hold a message in `kv` (deleted/purged keys may appear: `get` says so).

    nats-py exposes no public way to reach a bucket's stream, hence the private attributes
    (`_js`, `_stream`, `_pre`: set by `KeyValue.__init__` since nats-py 2.1).
    """
    prefix: str = kv._pre
    info = await kv._js.stream_info(kv._stream, subjects_filter=f"{prefix}>")
    subjects = info.state.subjects or {}
    return sorted(s[len(prefix) :] for s in subjects if s.startswith(prefix))
