"""The nats-py types the services name in their signatures, re-exported by the bus layer.

Services never import nats-py (a ruff `banned-api` rule scoped to `services/` enforces it):
they hold a connection, receive messages and keep subscriptions, and name those with the
aliases below. nats-py's errors are not here on purpose: `kernelbus.bus`, `kernelbus.bus_kv`
and `kernelbus.registry` turn them into `kernelbus.errors` types, which is all a service sees.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

PushSubscription = JetStreamContext.PushSubscription
"""A JetStream push consumer's subscription (the culler's activity feeds)."""

PullSubscription = JetStreamContext.PullSubscription
"""A JetStream pull consumer's subscription (the events service's durable consumer)."""

__all__ = [
    "AckPolicy",
    "Client",
    "ConsumerConfig",
    "DeliverPolicy",
    "JetStreamContext",
    "Msg",
    "PullSubscription",
    "PushSubscription",
    "Subscription",
]
