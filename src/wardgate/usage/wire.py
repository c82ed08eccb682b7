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
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,')
_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"  # SSE allows all three (a lone CR too)
_EVENT_END = re.compile(_LINE_END + _LINE_END)
# A chunk ending in one of these, after a byte that ends no line, ends an event with nothing left
# over; after more line ends ("\n\n\n"), `_split` would hold the last one for the next event.
_PLAIN_ENDS = (b"\n\n", b"\r\n\r\n")


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
    background: bool = False  # a Responses call answered later, elsewhere: its usage is never seen


MAX_COUNT = 10**12  # tokens: a count or maximum beyond this is not believed
_MODEL_NAME = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces: every model name in use
# Keys whose meaning wardgate acts on. Ollama decodes with Go's encoding/json, which matches keys
# without regard to case and keeps the last: `"Model"` after `"model"` would name another model.
_SIGNIFICANT = frozenset(
    {
        "model",
        "name",
        "stream",
        "stream_options",
        "options",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "num_predict",
        "include_usage",
        "background",
    }
)
INVALID_MODEL = "The model name must be 1 to 200 printable characters without spaces."


# Go's encoding/json matches keys by Unicode's simple case folding, which takes three letters
# outside ASCII onto ASCII ones: the dotless i (U+0131) is `I`, the long s (U+017F) `S`, the Kelvin
# sign (U+212A) `K`. Python's casefold leaves the dotless i alone, so `"stream_opt\u0131ons"` was
# stream_options to Ollama and not to wardgate (found by review): keys are compared with the three
# mapped first.
_GO_FOLDS = str.maketrans({"\u0131": "i", "\u017f": "s", "\u212a": "k"})


def _unambiguous(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when two keys differ only in case (or repeat), or when a key wardgate
    reads is spelled in another case: a server that reads keys differently would see another request."""
    seen: set[str] = set()
    for key, _value in pairs:
        folded = key.casefold() if key.isascii() else key.translate(_GO_FOLDS).casefold()
        if folded in seen or (folded in _SIGNIFICANT and key != folded):
            raise BadRequestError(
                f"The request body has a key that is ambiguous: {key[:40]!r}.", code="ambiguous_json"
            )
        seen.add(folded)
    return dict(pairs)


# Made once: json.loads and json.dumps with options make a decoder or encoder per call (a fifth of
# reading a chat request).
_REQUEST_JSON = json.JSONDecoder(object_pairs_hook=_unambiguous)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _json_text(body: bytes) -> str:
    """The body as text, as json.loads reads bytes: UTF-8, -16 or -32, a byte-order mark or none."""
    return body.decode(json.detect_encoding(body), "surrogatepass")


def read_json_request(body: bytes, fmt: Format, endpoint: str) -> ModelRequest:
    """The model and stream flag of a JSON body; BadRequestError when it is not one JSON object with
    unambiguous keys, a `stream` that is a boolean and a model name that is one."""
    try:
        document = _REQUEST_JSON.decode(_json_text(body)) if body else None
    except (ValueError, RecursionError):
        raise BadRequestError("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_json")
    model = document.get("model")
    if fmt is Format.OLLAMA and model is None:
        model = document.get("name")  # /api/show and older clients
    stream = document.get("stream")
    if stream is not None and not isinstance(stream, bool):  # "stream": 1 streams for a lax server
        raise BadRequestError("stream must be true or false.", code="invalid_stream")
    if fmt is Format.OLLAMA:  # chat and generate stream unless told not to; the others never do
        streaming = stream is not False and endpoint in ("api/chat", "api/generate")
    else:
        streaming = stream is True
    asks = False
    if fmt is Format.OPENAI and streaming and endpoint in ("chat/completions", "completions"):
        options = document.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            given = options if isinstance(options, dict) else {}
            document["stream_options"] = {**given, "include_usage": True}
            body = _COMPACT_JSON.encode(document).encode()
            asks = True
    return ModelRequest(
        checked_model(model), streaming, _max_tokens(document), body, asks, document.get("background") is True
    )


def checked_model(model: object) -> str | None:
    """The model name if there is one (None: absent); BadRequestError for one no server would have."""
    if model is None:
        return None
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise BadRequestError(INVALID_MODEL, code="invalid_model")
    return model


def form_request(model: str | None) -> ModelRequest:
    """A multipart request (audio, image edits), of which only the model is read."""
    return ModelRequest(checked_model(model), False, None, b"", False)


def _max_tokens(document: dict[str, Any]) -> int | None:
    options = document.get("options")
    for value in (
        document.get("max_tokens"),
        document.get("max_completion_tokens"),
        document.get("max_output_tokens"),
        options.get("num_predict") if isinstance(options, dict) else None,
    ):
        if type(value) is int and value > 0:
            return min(value, MAX_COUNT)
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
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


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
    Otherwise an event or line longer than `MAX_EVENT` (an echoed 3 MiB prompt, a batch of
    embeddings) keeps only its last `_TAIL` bytes, where the counts are, and so does an unstreamed
    answer too large to be sent whole (OpenAI's `usage` comes after the data).
    """

    def __init__(self, fmt: Format, *, streamed: bool, strip: bool = False) -> None:
        self.format = fmt
        self.streamed = streamed or fmt is Format.OLLAMA  # NDJSON lines, one object or many
        self.strip = strip
        self.usage: Usage | None = None
        self.finished = False  # the answer's own end was seen ([DONE], response.completed, done)
        self._pending = b""
        self._gave_up = False
        self._cut = False  # the pending event lost its beginning: only its tail is kept
        self.seen = 0  # bytes of the answer, for an estimate when it reports no usage

    def feed(self, chunk: bytes) -> bytes:
        self.seen += len(chunk)
        if not self.streamed:
            self._pending = (self._pending + chunk)[-_TAIL:]
            return chunk
        if self._gave_up:
            return chunk
        if not self._pending and self._plain_events(chunk):
            return chunk
        events, self._pending = self._split(self._pending + chunk)
        if events and self._cut:
            self._cut = False
            self._tail_of_event(events.pop(0)[0])
        kept = [(self._event(event), end) for event, end in events]
        out = b"".join(event + end for event, end in kept if event is not None)
        if len(self._pending) > MAX_EVENT:
            if self.strip:  # its end cannot be waited for: pass everything on from here
                self._gave_up = True
                held, self._pending = self._pending, b""
                return out + held
            self._pending, self._cut = self._pending[-_TAIL:], True
        return out if self.strip else chunk

    def close(self) -> bytes:
        """The end of the answer: notes the usage still held; returns what is left to send."""
        held, self._pending = self._pending, b""
        if not self.streamed or self._cut:
            self._tail_of_event(held)
            return b""
        if not held.strip():
            return held if self.strip else b""
        event = self._event(held)
        return (event or b"") if self.strip else b""

    def _plain_events(self, chunk: bytes) -> bool:
        """Whether `chunk` is whole SSE events that `_event` would pass on unchanged and learn nothing
        from: no usage, no `[DONE]`, and it ends where an event ends (nothing is left to hold).

        A stream's answer is mostly such events, one or a few a chunk: sent on without splitting
        them (the model's tokens cost a scan, not a parse, so the relay keeps up with a fast
        server). Ollama's lines all say `"done"` and take the full path.
        """
        return (
            self.format is not Format.OLLAMA
            and _ends_at_one_event_end(chunk)
            and b'"usage"' not in chunk
            and b"[DONE]" not in chunk
        )

    def _tail_of_event(self, tail: bytes) -> None:
        """The usage at the end of an answer or event too long to hold whole."""
        found = _ollama_counts_in(tail) if self.format is Format.OLLAMA else _usage_in_tail(tail)
        if found is not None:
            self.usage, self.finished = found, True

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
            if document.get("type") in _RESPONSES_ENDS:  # failed and incomplete ones used tokens too
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
_RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')
_OLLAMA_COUNT = re.compile(rb'"(prompt_eval_count|eval_count)"\s*:\s*(\d{1,13})\b')


def _ends_at_one_event_end(chunk: bytes) -> bool:
    """Whether `chunk` ends with exactly one event end, the one `_split` would find there."""
    for end in _PLAIN_ENDS:
        if chunk.endswith(end):
            return chunk[-len(end) - 1 : -len(end)] not in (b"\r", b"\n")
    return False


def _usage_in_tail(tail: bytes) -> Usage | None:
    """The last `usage` object of an OpenAI-format JSON body, read from its end (one linear scan)."""
    matches = list(_USAGE_KEY.finditer(tail))
    if not matches:
        return None
    found = matches[-1]
    start, depth, quoted, escaped = found.end() - 1, 0, False, False
    for index in range(start, len(tail)):
        byte = tail[index]
        if quoted:
            escaped, quoted = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            quoted = True
        elif byte == 0x7B:
            depth += 1
        elif byte == 0x7D:
            depth -= 1
            if depth == 0:
                return _openai_usage(_loads(tail[start : index + 1]))
    return None


def _ollama_counts_in(tail: bytes) -> Usage | None:
    """Ollama's counts from the end of a final object too long to hold (a batch of embeddings)."""
    counts = {name: int(value) for name, value in _OLLAMA_COUNT.findall(tail)}
    return _ollama_usage({k.decode(): v for k, v in counts.items()})


def _data_of(event: bytes) -> bytes | None:
    """The data of an SSE event (its `data:` lines joined), or None when it has none."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
