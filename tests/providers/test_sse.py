"""The server-sent events decoder: however the bytes are split, the same events come out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowengine.providers.sse import EventTooLarge, SseDecoder

STREAM = (
    b": OPENROUTER PROCESSING\r\n\r\n"
    b'data: {"a": "caf\xc3\xa9"}\r\n\r\n'
    b"event: message\nid: 7\nretry: 10\n"
    b"data: first line\ndata:second line\n\n"
    b": keep-alive\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = ['{"a": "café"}', "first line\nsecond line", "[DONE]"]


def decode(chunks: list[bytes]) -> list[str]:
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_comments_crlf_other_fields_and_multiline_data() -> None:
    assert decode([STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_a_few_bytes_per_read_give_the_same_events(size: int) -> None:
    # One byte at a time splits the UTF-8 é and the CRLF pairs too.
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert decode([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EVENTS


def test_an_event_the_server_did_not_end_is_read_at_the_end() -> None:
    assert decode([b"data: x\n"]) == ["x"]
    assert decode([b"data: x"]) == ["x"]
    assert decode([b": only a comment"]) == []


def test_a_line_past_the_bound_is_an_error_before_its_end_arrives() -> None:
    decoder = SseDecoder(limit=100)
    decoder.feed(b"data: " + b"x" * 90)
    with pytest.raises(EventTooLarge, match="a line longer than 100 bytes"):
        decoder.feed(b"x" * 20)


def test_an_event_of_many_lines_past_the_bound_is_an_error() -> None:
    decoder = SseDecoder(limit=100)
    with pytest.raises(EventTooLarge, match="an event larger than 100 bytes"):
        decoder.feed(b"data: " + b"x" * 60 + b"\n" + b"data: " + b"y" * 60 + b"\n")
