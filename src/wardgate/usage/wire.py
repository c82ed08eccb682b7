"""Model calls on the wire: the model a request names, and the tokens its answer reports.

Requests: the body is read whole (bounded by `MODEL_REQUEST_MAX_BYTES`), parsed once, and forwarded
as the same bytes — except that an OpenAI-format stream that did not ask for usage is made to ask
(`stream_options.include_usage`), since OpenAI sends token counts in a stream only when asked.

Answers are tapped as they pass, never buffered whole (`UsageTap`):

- OpenAI format: the body's `usage`; in a stream, the chunk that carries it. When wardgate was the
  one to ask, that usage-only chunk (`"choices":[]`) is taken out again, and so is the `"usage":null`
  the upstream then adds to every other chunk: the client receives the stream it asked for.
- The Responses API: `usage` of the response, in a stream that of `response.completed`.
- Ollama: `prompt_eval_count` and `eval_count` of the final object (`"done":true`), streamed or not.

An answer that reports nothing is *unmetered* (`Usage.metered` false), never zero tokens.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from wardgate.errors import BadRequestError

MAX_EVENT = 1024 * 1024  # bytes of one stream event or line held while waiting for its end
_USAGE_NULL = re.compile(rb',"usage":null(?=[,}])|"usage":null,')
_EVENT_END = re.compile(rb"\r?\n\r?\n")


class Format(enum.Enum):
    OPENAI = "openai"  # chat/completions, completions, embeddings, audio, images, moderations
    RESPONSES = "responses"  # the Responses API
    OLLAMA = "ollama"  # Ollama's native API


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a model call's body says: its model, whether it streams, the tokens it may produce."""

    model: str | None
    stream: bool
    max_tokens: int | None  # max_tokens, max_completion_tokens, max_output_tokens or num_predict
    body: bytes  # to forward: the client's bytes, or the same request asking for usage
    asks_usage: bool  # wardgate added `include_usage`: the usage chunk is not the client's


def read_json_request(body: bytes, fmt: Format, endpoint: str) -> ModelRequest:
    """The model and stream flag of a JSON body; BadRequestError when it is not a JSON object."""
    try:
        document = json.loads(body) if body else None
    except (ValueError, RecursionError):
        raise BadRequestError("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_json")
    model = document.get("model")
    if fmt is Format.OLLAMA and model is None:
        model = document.get("name")  # /api/show and older clients
    stream = document.get("stream")
    if fmt is Format.OLLAMA:  # chat and generate stream unless told not to; the others never do
        streaming = stream is not False and endpoint in ("api/chat", "api/generate")
    else:
        streaming = stream is True
    max_tokens = _max_tokens(document)
    asks = False
    if fmt is Format.OPENAI and streaming and endpoint in ("chat/completions", "completions"):
        options = document.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            document["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
            asks = True
    return ModelRequest(model if isinstance(model, str) else None, streaming, max_tokens, body, asks)


def form_request(model: str | None) -> ModelRequest:
    """A multipart request (audio, image edits), of which only the model is read."""
    return ModelRequest(model, False, None, b"", False)


def _max_tokens(document: dict[str, Any]) -> int | None:
    options = document.get("options")
    for value in (
        document.get("max_tokens"),
        document.get("max_completion_tokens"),
        document.get("max_output_tokens"),
        options.get("num_predict") if isinstance(options, dict) else None,
    ):
        if type(value) is int and value > 0:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens an answer reported; all None (and `metered` false) when it reported none."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def metered(self) -> bool:
        return self.prompt_tokens is not None or self.completion_tokens is not None

    @property
    def total(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _openai_usage(usage: object) -> Usage | None:
    """OpenAI's usage object, or the Responses API's (input/output tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
    if completion is None and prompt is not None:
        completion = 0  # embeddings and moderations produce no tokens
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None
    reasoning = (
        _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else None
    )
    found = Usage(prompt, completion, cached, reasoning)
    return found if found.metered else None


def _ollama_usage(document: object) -> Usage | None:
    if not isinstance(document, dict) or document.get("done") is False:
        return None
    found = Usage(_count(document.get("prompt_eval_count")), _count(document.get("eval_count")))
    if found.prompt_tokens is not None and found.completion_tokens is None:
        found = Usage(found.prompt_tokens, 0)  # /api/embed
    return found if found.metered else None


class UsageTap:
    """Watches an answer go by and keeps the usage it reports, without holding the answer.

    `feed` returns what to send on: the chunk itself, except when a stream must lose the usage
    wardgate asked for (`strip`): then complete events are passed on and a partial one is held
    until its end arrives (at most `MAX_EVENT` bytes: past that the tap gives up and passes all).
    An unstreamed answer too large to be sent whole keeps only its last `_TAIL` bytes, where the
    `usage` object of an OpenAI-format body is (after the data).
    """

    def __init__(self, fmt: Format, *, streamed: bool, strip: bool = False) -> None:
        self.format = fmt
        self.streamed = streamed or fmt is Format.OLLAMA  # NDJSON lines, one object or many
        self.strip = strip
        self.usage: Usage | None = None
        self.finished = False  # the answer's own end was seen ([DONE], response.completed, done)
        self._pending = b""
        self._gave_up = False

    def feed(self, chunk: bytes) -> bytes:
        if not self.streamed:
            self._pending = (self._pending + chunk)[-_TAIL:]
            return chunk
        if self._gave_up:
            return chunk
        events, self._pending = self._split(self._pending + chunk)
        kept = [(self._event(event), end) for event, end in events]
        out = b"".join(event + end for event, end in kept if event is not None)
        if len(self._pending) > MAX_EVENT:
            self._gave_up = True
            held, self._pending = self._pending, b""
            return out + held if self.strip else chunk
        return out if self.strip else chunk

    def close(self) -> bytes:
        """The end of the answer: notes the usage still held; returns what is left to send."""
        held, self._pending = self._pending, b""
        if not self.streamed:
            self.usage = _usage_in_tail(held)
            self.finished = self.usage is not None
            return b""
        if not held.strip():
            return held if self.strip else b""
        event = self._event(held)
        return (event or b"") if self.strip else b""

    def _split(self, data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """Complete events (or lines) with what ended each, and the unfinished rest."""
        if self.format is Format.OLLAMA:
            *lines, rest = data.split(b"\n")
            return [(line, b"\n") for line in lines], rest
        events, start = [], 0
        for end in _EVENT_END.finditer(data):
            events.append((data[start : end.start()], end.group()))
            start = end.end()
        return events, data[start:]

    def _event(self, event: bytes) -> bytes | None:
        """Note the usage of one event or line; None when the event is to be dropped."""
        if self.format is Format.OLLAMA:
            if b'"done"' in event or b'"prompt_eval_count"' in event:
                document = _loads(event)
                if isinstance(document, dict) and document.get("done", True) is True:
                    self.finished = True  # the final object (/api/embed answers one, without "done")
                    self.usage = _ollama_usage(document) or self.usage
            return event
        data = _data_of(event)
        if data is None:
            return event
        if data.strip() == b"[DONE]":
            self.finished = True
            return event
        if b'"usage"' not in data:
            return event
        document = _loads(data)
        if not isinstance(document, dict):
            return event
        if self.format is Format.RESPONSES:
            if document.get("type") == "response.completed":
                self.finished = True
                response = document.get("response")
                self.usage = _openai_usage(response.get("usage") if isinstance(response, dict) else None)
            return event
        if document.get("usage") is not None:
            self.usage = _openai_usage(document["usage"]) or self.usage
            if self.strip and document.get("choices") == []:
                return None  # the usage-only chunk wardgate asked for
        return _USAGE_NULL.sub(b"", event) if self.strip else event


_TAIL = 64 * 1024
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')


def _usage_in_tail(tail: bytes) -> Usage | None:
    """The last `usage` object of an OpenAI-format JSON body, read from its end."""
    for found in reversed(list(_USAGE_KEY.finditer(tail))):
        start = found.end() - 1
        depth = 0
        for index in range(start, len(tail)):
            depth += {ord("{"): 1, ord("}"): -1}.get(tail[index], 0)
            if depth == 0:
                return _openai_usage(_loads(tail[start : index + 1]))
    return None


def _data_of(event: bytes) -> bytes | None:
    """The data of an SSE event (its `data:` lines joined), or None when it has none."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
