"""What the api keeps of the client messages it sent, to send again those NATS said reached no
worker (`kernelbus_api.channels.undelivered`)."""

from __future__ import annotations

from kernelbus import subjects
from kernelbus_api.channels import undelivered
from kernelbus_api.channels.undelivered import SentInputs


def test_a_returned_message_is_taken_back_once() -> None:
    sent = SentInputs()
    seq = sent.next_seq()
    sent.sent(seq, b"frame")
    assert sent.undelivered(seq) == b"frame"
    assert sent.undelivered(seq) is None  # the status of its second chunk
    assert not sent.forgotten(seq)


def test_only_the_last_messages_are_kept_by_count_and_bytes() -> None:
    sent = SentInputs(keep=2, keep_bytes=10)
    seqs = [sent.next_seq() for _ in range(4)]
    for seq in seqs[:3]:
        sent.sent(seq, b"x")
    assert sent.undelivered(seqs[0]) is None and sent.forgotten(seqs[0])
    assert sent.undelivered(seqs[1]) == b"x"
    sent.sent(seqs[3], b"y" * 11)  # over the byte bound on its own: not kept at all
    assert sent.forgotten(seqs[2])
    assert sent.undelivered(seqs[3]) is None and sent.forgotten(seqs[3])


def test_held_messages_stay_in_sequence_order() -> None:
    held: list[undelivered.Held] = []
    undelivered.hold(held, (1, b"1"))
    undelivered.hold(held, (3, b"3"))  # sent by the client after 1 was returned
    undelivered.hold(held, (2, b"2"))  # returned by NATS after 3 was held
    assert [h[0] for h in held] == [1, 2, 3]


def test_reply_subjects_round_trip_and_strangers_are_refused() -> None:
    subject = subjects.input_reply("api-1", "c0ffee", 7)
    assert undelivered.parse_reply_subject("api-1", subject) == ("c0ffee", 7)
    assert undelivered.parse_reply_subject("api-2", subject) is None
    assert undelivered.parse_reply_subject("api-1", subject + "x") is None
    assert undelivered.parse_reply_subject("api-1", "kb.api.api-1.undelivered.c0ffee") is None


def test_only_a_no_responders_status_counts() -> None:
    assert undelivered.no_responders({"Status": "503"})
    assert not undelivered.no_responders({"Status": "408"})
    assert not undelivered.no_responders(None)


def test_a_re_attach_names_what_is_kept_and_how_many_were_given() -> None:
    sent = SentInputs(keep=3)
    for _ in range(5):
        seq = sent.next_seq()
        sent.sent(seq, b"x")
    assert sent.undelivered(4) is not None  # NATS returned it: held, no longer kept
    held_back = sent.next_seq()  # given while input is held: not published, not kept
    assert sent.given == held_back == 6
    assert sent.kept() == [3, 5]


def test_reply_subjects_are_refused_when_malformed() -> None:
    for subject in (
        None,
        "",
        "kb.api.api-1.undelivered.c0ffee.-1",
        "kb.api.api-1.undelivered.c0ffee.١٢",  # Unicode digits: not a sequence number
        "kb.api.api-1.undelivered.c0ffee." + "9" * 19,
        "kb.api.api-1.other.c0ffee.1",
        "xx.api.api-1.undelivered.c0ffee.1",
        "kb.api.api 1.undelivered.c0ffee.1",
    ):
        assert subjects.parse_input_reply(subject) is None, subject
    parsed = subjects.parse_input_reply("kb.api.api-1.undelivered.c0ffee.12")
    assert parsed == subjects.InputReply("api-1", "c0ffee", 12)
