"""Request bodies: the messages encoded once, spliced after the other members."""

from __future__ import annotations

import json

from flowengine.providers.base import ChatRequest, encode_messages, json_body

MESSAGES = [{"role": "user", "content": "Quantum? ½ · 量子"}]


def test_the_body_is_the_json_of_head_then_messages() -> None:
    body = json_body({"temperature": 0.2, "model": "m/x"}, encode_messages(MESSAGES))
    assert json.loads(body) == {"temperature": 0.2, "model": "m/x", "messages": MESSAGES}
    assert list(json.loads(body)) == ["temperature", "model", "messages"]
    assert "量子".encode() in body  # UTF-8, not \\u escapes


def test_messages_given_win_over_a_messages_member_of_head() -> None:
    body = json_body({"messages": "stray", "model": "m"}, encode_messages(MESSAGES))
    assert json.loads(body) == {"model": "m", "messages": MESSAGES}


def test_an_empty_head_gives_messages_alone() -> None:
    assert json.loads(json_body({}, encode_messages(MESSAGES))) == {"messages": MESSAGES}


def test_a_lone_surrogate_is_sent_as_its_json_escape() -> None:
    lone = [{"role": "user", "content": "a\ud800b"}]
    body = json_body({"model": "m"}, encode_messages(lone))
    body.decode("utf-8")  # valid UTF-8
    assert json.loads(body)["messages"] == lone


def test_a_request_encodes_its_messages_once() -> None:
    request = ChatRequest("m", MESSAGES)
    first = request.encoded_messages()
    assert first is request.encoded_messages()
    assert json.loads(first) == MESSAGES
