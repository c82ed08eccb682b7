"""The usage tap on its own: however the network splits an answer, the client gets the same bytes
and wardgate the same numbers (pure: no processes)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.errors import BadRequestError
from wardgate.usage.wire import MAX_COUNT, MAX_EVENT, Format, Usage, UsageTap, read_json_request


def sse(objects: list[object]) -> bytes:
    return b"".join(b"data: " + json.dumps(o, separators=(",", ":")).encode() + b"\n\n" for o in objects)


def chunk(text: str, *, asked: bool) -> dict[str, object]:
    found: dict[str, object] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"content": text}}],
    }
    if asked:
        found["usage"] = None
    return found


USAGE = {
    "prompt_tokens": 3,
    "completion_tokens": 2,
    "total_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 1},
}
WITHOUT = sse([chunk("a", asked=False), chunk("b", asked=False)]) + b"data: [DONE]\n\n"
WITH = (
    sse([chunk("a", asked=True), chunk("b", asked=True), {"id": "c1", "choices": [], "usage": USAGE}])
    + b"data: [DONE]\n\n"
)


def run(tap: UsageTap, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return b"".join(tap.feed(piece) for piece in pieces) + tap.close()


@given(st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=200)
def test_the_usage_wardgate_asked_for_is_taken_out_wherever_the_stream_is_cut(cuts: list[int]) -> None:
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    assert run(tap, WITH, cuts) == WITHOUT
    assert tap.usage == Usage(3, 2, 1, None) and tap.finished


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_a_stream_the_client_asked_usage_for_passes_unchanged(cuts: list[int]) -> None:
    tap = UsageTap(Format.OPENAI, streamed=True, strip=False)
    assert run(tap, WITH, cuts) == WITH
    assert tap.usage == Usage(3, 2, 1, None)


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_ollama_counts_come_from_the_final_line(cuts: list[int]) -> None:
    lines = [
        {"message": {"content": "a"}, "done": False},
        {"done": True, "prompt_eval_count": 7, "eval_count": 4},
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    tap = UsageTap(Format.OLLAMA, streamed=True)
    assert run(tap, data, cuts) == data
    assert tap.usage == Usage(7, 4) and tap.finished


def test_the_responses_api_reports_in_its_completed_event() -> None:
    completed = {
        "type": "response.completed",
        "response": {
            "usage": {"input_tokens": 5, "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}}
        },
    }
    data = b'event: response.created\ndata: {"type":"response.created"}\n\n'
    data += b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
    tap = UsageTap(Format.RESPONSES, streamed=True)
    assert run(tap, data, [17, 40]) == data
    assert tap.usage == Usage(5, 6, None, 2)


def test_an_unstreamed_answer_too_large_to_hold_is_read_from_its_end() -> None:
    body = json.dumps(
        {"data": [{"embedding": [0.5] * 40_000}], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    )
    tap = UsageTap(Format.OPENAI, streamed=False)
    assert run(tap, body.encode(), list(range(0, len(body), 4096))) == body.encode()
    assert tap.usage == Usage(9, 0)


def test_an_answer_without_usage_is_unmetered_not_zero() -> None:
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    run(tap, WITHOUT, [5])
    assert tap.usage is None and tap.finished


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"])
@pytest.mark.parametrize("strip", [True, False])
def test_events_sent_one_a_chunk_are_all_read(end: bytes, strip: bool) -> None:
    """As a model server sends them: each chunk one whole event. Those without usage pass on as
    they came (`_plain_events`); the usage, its `null`s and `[DONE]` are still found in theirs."""
    stream, stripped = WITH.replace(b"\n\n", end), WITHOUT.replace(b"\n\n", end)
    events = [event + end for event in stream.split(end)[:-1]]
    tap = UsageTap(Format.OPENAI, streamed=True, strip=strip)
    out = b"".join(tap.feed(event) for event in events) + tap.close()
    assert out == (stripped if strip else stream)
    assert tap.usage == Usage(3, 2, 1, None) and tap.finished


@pytest.mark.parametrize("extra", [b"\n", b"\r\n"])
def test_a_chunk_with_more_line_ends_than_an_event_end_takes_the_full_path(extra: bytes) -> None:
    """Found by review: a chunk ending in three line ends was passed on whole, where the full path
    holds the last one for the next event, and drops it with the usage-only event wardgate asked
    for: the client got one blank line more than it would have otherwise."""
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    plain = b'data: {"choices":[{"delta":{"content":"a"}}]}'
    usage_only = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    ends = extra + extra
    out = tap.feed(plain + extra + ends) + tap.feed(usage_only) + tap.close()
    full = UsageTap(Format.OPENAI, streamed=True, strip=True)
    full._plain_events = lambda chunk: False  # type: ignore[method-assign]
    assert out == full.feed(plain + extra + ends) + full.feed(usage_only) + full.close()
    assert tap.usage == full.usage == Usage(3, 2)


def test_a_plain_chunk_after_a_partial_event_completes_it() -> None:
    """A chunk that ends an event is not passed on alone when an event's beginning is held."""
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    usage_event = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    cut = usage_event.index(b'"completion_tokens"')  # what follows has neither "usage" nor [DONE]
    assert tap.feed(usage_event[:cut]) == b""
    assert tap.feed(usage_event[cut:]) == b""  # the usage-only event wardgate asked for: dropped
    assert tap.usage == Usage(3, 2)


def test_an_endless_event_is_passed_on_not_held() -> None:
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    endless = b"data: " + b"x" * (MAX_EVENT + 10)
    assert tap.feed(endless) == endless  # held no longer than its limit
    assert tap.feed(b"more") == b"more"


def test_asking_for_usage_keeps_what_the_client_sent() -> None:
    body = json.dumps(
        {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}
    ).encode()
    request = read_json_request(body, Format.OPENAI, "chat/completions")
    assert request.asks_usage and json.loads(request.body)["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }
    asked = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True}}).encode()
    assert read_json_request(asked, Format.OPENAI, "chat/completions").body == asked  # the same bytes
    assert not read_json_request(b'{"model":"m"}', Format.OPENAI, "chat/completions").asks_usage


def test_a_line_too_long_to_hold_still_gives_its_counts() -> None:
    """A batch of embeddings is one line of megabytes; its counts are at its end."""
    line = json.dumps({"embeddings": [[0.25] * 300_000], "prompt_eval_count": 42}).encode()
    tap = UsageTap(Format.OLLAMA, streamed=False)
    assert len(line) > MAX_EVENT
    assert run(tap, line, list(range(0, len(line), 65536))) == line
    assert tap.usage == Usage(42, 0)


def test_a_responses_call_that_failed_or_stopped_short_is_charged_too() -> None:
    for ending in ("response.incomplete", "response.failed"):
        event = {"type": ending, "response": {"usage": {"input_tokens": 900, "output_tokens": 16}}}
        tap = UsageTap(Format.RESPONSES, streamed=True)
        run(tap, b"data: " + json.dumps(event).encode() + b"\n\n", [])
        assert tap.usage == Usage(900, 16)


def test_a_non_compact_usage_null_is_taken_out_too() -> None:
    asked = b'data: {"id": "c", "choices": [{"delta": {}}], "usage": null}\n\n'
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    assert run(tap, asked, []) == b'data: {"id": "c", "choices": [{"delta": {}}]}\n\n'


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"llama3","Model":"mistral"}',  # Go's decoder: the last, whatever its case
        b'{"model":"llama3","model":"mistral"}',
        b'{"MODEL":"mistral"}',
        b'{"model":"llama3","Stream":false}',
        b'{"model":"llama3","options":{"num_predict":1,"Num_Predict":99}}',
        # Go matches these to "stream_options" and "options" (dotless i upper-cases to I): review
        '{"model":"llama3","stream_opt\u0131ons":{"include_usage":false}}'.encode(),
        '{"model":"llama3","\u0131s\u0131":1,"isi":2}'.encode(),  # one key to Go
        '{"model":"llama3","\u017ftream":false}'.encode(),  # long s: S
    ],
)
def test_keys_another_server_would_read_differently_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequestError, match="ambiguous"):
        read_json_request(body, Format.OLLAMA, "api/chat")


def test_keys_in_other_alphabets_are_read_as_they_are() -> None:
    """Keys the model server matches to no other key (a tool's arguments, a schema's properties)."""
    keys = ["gr\u00f6\u00dfe", "\u0131s\u0131", "stra\u00dfe", "\u0130stanbul", "\ufb01le", "\u540d\u524d"]
    body = json.dumps({"model": "llama3", "format": {"properties": dict.fromkeys(keys, 1)}}).encode()
    assert read_json_request(body, Format.OLLAMA, "api/chat").model == "llama3"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model":"m","stream":1}', "invalid_stream"),  # a lax server streams; wardgate would not meter
        (b'{"model":"m","stream":"true"}', "invalid_stream"),
        (b'{"model":"llama3\\ud800"}', "invalid_model"),  # a lone surrogate: unwritable downstream
        (b'{"model":"llama3 latest"}', "invalid_model"),
        (b'{"model":["llama3"]}', "invalid_model"),
    ],
)
def test_values_wardgate_would_misread_are_refused(body: bytes, code: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        read_json_request(body, Format.OPENAI, "chat/completions")
    assert refused.value.code == code


def test_a_stated_maximum_is_believed_only_so_far() -> None:
    request = read_json_request(
        b'{"model":"m","options":{"num_predict":100000000000000000000}}', Format.OLLAMA, "api/generate"
    )
    assert request.max_tokens == MAX_COUNT


@given(st.lists(st.integers(min_value=0), max_size=8))
def test_a_stream_with_carriage_returns_alone_is_cut_into_events_too(cuts: list[int]) -> None:
    """Found by review: SSE that ends its lines with CR alone was held whole."""
    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    out = run(tap, WITH.replace(b"\n", b"\r"), cuts)
    assert out.replace(b"\r", b"\n") == WITHOUT and tap.usage == Usage(3, 2, 1, None)
