"""Which client messages of a connection the worker received, by the api's sequence numbers
(`kernelbus_worker.inputs`, ADR 0024): duplicates are dropped, and a re-attach learns which of
the messages the api still keeps never arrived."""

from __future__ import annotations

from kernelbus_worker import inputs
from kernelbus_worker.inputs import ConnectionInputs, ReceivedInputs


def test_a_message_that_arrives_twice_is_a_duplicate() -> None:
    received = ReceivedInputs()
    assert received.attached("c1", sent=0, kept=[]) == []
    assert received.receive("c1", 1)
    assert not received.receive("c1", 1)
    assert received.receive("c2", 1)  # another connection's 1


def test_a_re_attach_learns_what_never_arrived() -> None:
    received = ReceivedInputs()
    received.attached("c1", sent=0, kept=[])
    for seq in (1, 2, 4):  # 3 was lost on the way
        received.receive("c1", seq)
    assert received.attached("c1", sent=5, kept=[2, 3, 4, 5]) == [3, 5]
    assert received.receive("c1", 3)  # sent again: delivered
    assert received.receive("c1", 5)
    assert not received.receive("c1", 4)  # had arrived after all: dropped


def test_a_returned_message_sent_again_below_a_later_one_is_delivered() -> None:
    """NATS returned 5 while 6 reached the worker: 5, sent again, is not a duplicate."""
    received = ReceivedInputs()
    received.attached("c1", sent=0, kept=[])
    assert received.receive("c1", 6)
    assert received.receive("c1", 5)


def test_nothing_is_reported_for_a_connection_not_known_before() -> None:
    """A successor of a crashed worker: what the connection sent before is not known here, and
    re-sending it could run code twice."""
    received = ReceivedInputs()
    assert received.attached("c1", sent=40, kept=list(range(1, 41))) == []
    assert received.attached("c1", sent=41, kept=list(range(1, 42))) == [41]
    # First known by one of its messages: nothing before it is reported either.
    assert received.receive("c2", 57)
    assert received.attached("c2", sent=58, kept=[55, 56, 57, 58]) == [58]


def test_what_is_forgotten_is_not_reported_missing() -> None:
    conn = ConnectionInputs(floor=0)
    for seq in range(1, inputs.REMEMBERED + 11):
        assert conn.receive(seq)
    assert conn.floor == 10
    assert conn.missing(range(1, inputs.REMEMBERED + 12)) == [inputs.REMEMBERED + 11]


def test_connections_are_bounded_and_forgotten_on_detach() -> None:
    received = ReceivedInputs()
    for i in range(inputs.CONNECTIONS + 5):
        received.receive(f"c{i}", 1)
    assert received.attached("c0", sent=1, kept=[1]) == []  # forgotten: not known any more
    received.forget("c0")
    assert received.receive("c0", 1)
