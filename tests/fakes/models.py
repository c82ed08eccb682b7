"""A fake model server that speaks OpenAI's and Ollama's wire formats, for token-metering tests.

Run as a real process: `python -m tests.fakes.models PORT`. One process serves both APIs, as the
pair wardgate sits in front of: OpenAI under `/v1` (which Ollama's OpenAI-compatible layer shares)
and Ollama's native API under `/api`. `tests/models/test_wire.py` drives it with the real `openai`
and `ollama` client libraries, so a meter tested against it meets what those servers really send.

The numbers are predictable, so a test can assert them:

- prompt tokens: whitespace-separated words across every message `content` (or content part
  `text`), the `prompt`, or the `input`; a token id in an embeddings input counts one; at least 1.
- completion tokens: the first positive `max_tokens`, `max_completion_tokens`, `max_output_tokens`
  or Ollama `options.num_predict`, else 5. The text is that many words, `w0 w1 ...`, streamed one
  word per chunk; a given limit makes the finish reason `length`, else `stop`.
- cached tokens are 0; reasoning tokens are 0, or 2 (counted inside the completion tokens, the
  text unchanged) when the model's name contains `reason`.
- `silent-model` answers without any usage or counts, even when asked (the unmetered case).
- a transcription's input tokens are the audio file's size in bytes; an image costs 5 output tokens.
- the request header `x-fake-gap: SECONDS` spaces every streamed chunk by that long.

`GET /__requests` lists what arrived (method, path, query, headers, JSON body or form fields
without file contents); `DELETE /__requests` empties the list.

Longer than the house's ~300 lines on purpose: both wire formats live in one file so that a single
process can play both upstreams, and each format reads top to bottom in its own section.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

# name -> (family, parameter size); Ollama-style names (with a tag) are owned by "library".
# Beyond the chat and embedding models: one of each OpenAI media kind, a reasoning model (its name
# has "reason") and the unmetered one.
MODELS: dict[str, tuple[str, str]] = {
    "llama3:latest": ("llama", "8.0B"),
    "llama3.1:8b": ("llama", "8.0B"),
    "mistral:7b": ("llama", "7.2B"),
    "gpt-4o-mini": ("gpt", ""),
    "gpt-4o": ("gpt", ""),
    "reason-model": ("gpt", ""),
    "text-embedding-3-small": ("bert", ""),
    "whisper-1": ("whisper", ""),
    "tts-1": ("tts", ""),
    "dall-e-3": ("dall-e", ""),
    "silent-model": ("llama", "1.0B"),
}
SILENT = "silent-model"
DEFAULT_COMPLETION = 5
LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
FINGERPRINT = "fp_fake0001"
OLLAMA_VERSION = "0.12.6"
MODIFIED_AT = "2025-05-01T10:00:00Z"
# A 1x1 transparent PNG and one silent MPEG-1 Layer III frame header, for images and speech.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)
AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "aac": "audio/aac"}
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

REQUESTS: list[Json] = []
FILES: list[Json] = []
BLOBS: set[str] = set()
SERIAL = itertools.count(1)


# --- counting --------------------------------------------------------------------------------


def words(value: Any) -> int:
    """Whitespace-separated words in a string, a list, a message's `content` or a part's `text`."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return 1  # a token id, in an embeddings input
    if isinstance(value, list):
        return sum(words(item) for item in value)
    if isinstance(value, dict):
        return words(value.get("content")) + words(value.get("text"))
    return 0


@dataclass(frozen=True)
class Turn:
    """One generation: what the model was asked, what it answers, how it counts."""

    model: str
    prompt: int
    completion: int
    capped: bool
    gap: float

    @property
    def silent(self) -> bool:
        return self.model == SILENT

    @property
    def reasoning(self) -> int:
        return 2 if "reason" in self.model else 0

    @property
    def pieces(self) -> list[str]:
        return [f"w{i}" if i == 0 else f" w{i}" for i in range(self.completion)]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def finish(self) -> str:
        return "length" if self.capped else "stop"


def positive(value: Any, default: int) -> int:
    """`value` when it is a positive integer (not a bool), else `default`."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def fake_gap(request: Request) -> float:
    """Seconds between streamed chunks, from the `x-fake-gap` request header (0 without it)."""
    try:
        return max(0.0, float(request.headers.get("x-fake-gap", "0")))
    except ValueError:
        return 0.0


def turn(request: Request, body: Json, asked: Any) -> Turn:
    """The deterministic generation for `body`, whose prompt is the text in `asked`."""
    limits = [body.get(key) for key in LIMITS]
    if isinstance(body.get("options"), dict):
        limits.append(body["options"].get("num_predict"))
    limit = next((n for n in (positive(v, 0) for v in limits) if n), 0)
    completion = limit or DEFAULT_COMPLETION
    return Turn(str(body.get("model")), max(1, words(asked)), completion, bool(limit), fake_gap(request))


# --- encoding and recording ------------------------------------------------------------------


def compact(obj: Any) -> str:
    """JSON as both servers put it on one line: no spaces, UTF-8 left as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def go_json(obj: Any) -> bytes:
    """Go's encoding/json: compact, with <, > and & escaped (it does so by default)."""
    text = compact(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode()


def now() -> int:
    return int(time.time())


def go_time(moment: datetime | None = None) -> str:
    """RFC 3339 with nanoseconds and trailing zeros trimmed, as Go's time.Time marshals UTC."""
    text = (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return f"{text}Z"


def new_id(prefix: str) -> str:
    return f"{prefix}fake{next(SERIAL):08d}"


def streamed(parts: Iterable[bytes], gap: float, media_type: str) -> StreamingResponse:
    """Send `parts` as they come, `gap` seconds apart (x-fake-gap)."""

    async def paced() -> AsyncIterator[bytes]:
        for index, part in enumerate(parts):
            if index and gap:
                await asyncio.sleep(gap)
            yield part

    return StreamingResponse(paced(), media_type=media_type)


async def payload(request: Request) -> Json | None:
    """The request's JSON object, or None when the body is not one."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def recorded(endpoint: Endpoint) -> Endpoint:
    """Log the request for `GET /__requests` (file contents left out), then answer it."""

    async def record(request: Request) -> Response:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        entry: Json = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": headers,
        }
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            entry["form"] = {
                key: {"filename": value.filename, "size": value.size}
                if isinstance(value, UploadFile)
                else value
                for key, value in form.multi_items()
            }
        else:
            entry["json"] = await payload(request)
        REQUESTS.append(entry)
        return await endpoint(request)

    return record


async def requests_log(request: Request) -> Response:
    """GET lists the requests received so far, oldest first; DELETE forgets them."""
    if request.method == "DELETE":
        REQUESTS.clear()
        return Response(status_code=204)
    return Response(compact(REQUESTS), media_type="application/json")


# --- OpenAI ----------------------------------------------------------------------------------


def openai_json(obj: Json, status: int = 200) -> Response:
    """OpenAI pretty-prints its JSON answers: two spaces for results, four for errors."""
    indent = 2 if status < 400 else 4
    headers = {"x-request-id": new_id("req_")}
    return Response(json.dumps(obj, indent=indent), status, headers, "application/json")


def openai_error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> Response:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return openai_json({"error": error}, status)


async def openai_body(request: Request, *, model: bool = True) -> Json | Response:
    """The JSON body, or OpenAI's error when it is not JSON or (if `model`) names no known model."""
    body = await payload(request)
    if body is None:
        return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    if not model or body.get("model") in MODELS:
        return body
    if not body.get("model"):
        return openai_error(400, "you must provide a model parameter", "invalid_request_error")
    message = f"The model `{body['model']}` does not exist or you do not have access to it."
    return openai_error(404, message, "invalid_request_error", code="model_not_found")


def sse(obj: Json, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {compact(obj)}\n\n".encode()


def wants_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def chat_usage(t: Turn) -> Json:
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.prompt + t.completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": t.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def stream_options_refusal(body: Json) -> Response | None:
    """OpenAI rejects `stream_options` on a request that does not stream (a gateway injecting
    `include_usage` must add it to streamed requests only)."""
    if body.get("stream_options") is None or body.get("stream"):
        return None
    message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return openai_error(400, message, "invalid_request_error", "stream_options")


def usage_slot(t: Turn, body: Json) -> Json:
    """OpenAI's rule: every chunk carries `"usage":null` only when the request asked for usage."""
    return {"usage": None} if wants_usage(body) and not t.silent else {}


def stream_tail(t: Turn, body: Json, head: Json, chunks: list[Json]) -> Iterator[bytes]:
    """The chunks, then the usage chunk (no choices) when asked, then `[DONE]`."""
    for chunk in chunks:
        yield sse(chunk)
    if usage_slot(t, body):
        usage = chat_usage(t) if head["object"] == "chat.completion.chunk" else text_usage(t)
        yield sse(head | {"choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def chat_chunks(t: Turn, body: Json, head: Json) -> Iterator[bytes]:
    """A role chunk, one chunk per word, a finish chunk; each padded by `obfuscation` unless refused."""
    options = body.get("stream_options")
    obfuscate = not (isinstance(options, dict) and options.get("include_obfuscation") is False)
    slot = usage_slot(t, body)

    def chunk(delta: Json, finish: str | None) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        padding = {"obfuscation": "o" * max(1, 12 - len(delta.get("content") or ""))} if obfuscate else {}
        return head | {"choices": [choice]} | slot | padding

    first = chunk({"role": "assistant", "content": "", "refusal": None}, None)
    said = [chunk({"content": piece}, None) for piece in t.pieces]
    return stream_tail(t, body, head, [first, *said, chunk({}, t.finish)])


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions (OpenAI's, and Ollama's OpenAI-compatible one)."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    if refusal := stream_options_refusal(body):
        return refusal
    t = turn(request, body, body.get("messages"))
    head = {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": now(), "model": t.model}
    if body.get("stream"):
        meta = {
            "object": "chat.completion.chunk",
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        chunks = chat_chunks(t, body, head | meta)
        return streamed(chunks, t.gap, "text/event-stream")
    message: Json = {"role": "assistant", "content": t.text, "refusal": None, "annotations": []}
    answer = head | {
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": t.finish}]
    }
    if not t.silent:
        answer["usage"] = chat_usage(t)
    return openai_json(answer | {"service_tier": "default", "system_fingerprint": FINGERPRINT})


def text_usage(t: Turn) -> Json:
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.prompt + t.completion,
    }


async def completions(request: Request) -> Response:
    """POST /v1/completions, the legacy text completions."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    if refusal := stream_options_refusal(body):
        return refusal
    t = turn(request, body, body.get("prompt"))
    head = {"id": new_id("cmpl-"), "object": "text_completion", "created": now(), "model": t.model}

    def choice(text: str, finish: str | None) -> Json:
        return {"choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    if body.get("stream"):
        slot = usage_slot(t, body)
        chunks = [head | choice(piece, None) | slot for piece in t.pieces] + [
            head | choice("", t.finish) | slot
        ]
        return streamed(stream_tail(t, body, head, chunks), t.gap, "text/event-stream")
    usage = {} if t.silent else {"usage": text_usage(t)}
    return openai_json(head | choice(t.text, t.finish) | {"system_fingerprint": FINGERPRINT} | usage)


def vector(seed: int, size: int) -> list[float]:
    """A deterministic embedding of `size` floats."""
    return [round((seed + i + 1) / (size + seed + 1), 6) for i in range(size)]


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings; the openai SDK asks for base64 (little-endian float32) unless told."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    given = body.get("input")
    single = isinstance(given, str) or (isinstance(given, list) and all(isinstance(i, int) for i in given))
    inputs: list[Any] = [given] if single else list(given or [])
    size = positive(body.get("dimensions"), 8)
    data = []
    for index in range(len(inputs)):
        floats: Any = vector(index, size)
        if body.get("encoding_format") == "base64":
            floats = base64.b64encode(struct.pack(f"<{size}f", *floats)).decode()
        data.append({"object": "embedding", "index": index, "embedding": floats})
    answer = {"object": "list", "data": data, "model": body["model"]}
    prompt = max(1, words(inputs))
    usage = {} if body["model"] == SILENT else {"usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return openai_json(answer | usage)


def responses_usage(t: Turn) -> Json:
    return {
        "input_tokens": t.prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": t.completion,
        "output_tokens_details": {"reasoning_tokens": t.reasoning},
        "total_tokens": t.prompt + t.completion,
    }


def response_object(t: Turn, body: Json, rid: str, created: int, output: list[Json]) -> Json:
    """A Responses API `response`: in progress while `output` is empty, then completed with usage."""
    done = bool(output)
    answer: Json = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "completed" if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": t.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage(t) if done else None,
        "user": None,
        "metadata": {},
    }
    if t.silent:
        del answer["usage"]
    return answer


def response_events(t: Turn, body: Json, rid: str, created: int) -> Iterator[bytes]:
    """The Responses API stream: named events, numbered, no `[DONE]` at the end."""
    mid = new_id("msg_")
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    item = {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    done_item = item | {"status": "completed", "content": [part | {"text": t.text}]}
    events: list[Json] = [
        {"type": "response.created", "response": response_object(t, body, rid, created, [])},
        {"type": "response.in_progress", "response": response_object(t, body, rid, created, [])},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added"} | where | {"part": part},
    ]
    for piece in t.pieces:
        padding = "o" * max(1, 12 - len(piece))
        events.append(
            {"type": "response.output_text.delta"}
            | where
            | {"delta": piece, "logprobs": [], "obfuscation": padding}
        )
    events += [
        {"type": "response.output_text.done"} | where | {"text": t.text, "logprobs": []},
        {"type": "response.content_part.done"} | where | {"part": part | {"text": t.text}},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {"type": "response.completed", "response": response_object(t, body, rid, created, [done_item])},
    ]
    for number, event in enumerate(events):
        kind = event.pop("type")
        yield sse({"type": kind, "sequence_number": number} | event, event=kind)


async def responses(request: Request) -> Response:
    """POST /v1/responses, streamed as named server-sent events or answered at once."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    t = turn(request, body, body.get("input"))
    rid, created = new_id("resp_"), now()
    if body.get("stream"):
        return streamed(response_events(t, body, rid, created), t.gap, "text/event-stream")
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": t.text}
    item = {
        "id": new_id("msg_"),
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }
    return openai_json(response_object(t, body, rid, created, [item]))


def model_card(name: str) -> Json:
    """A model as OpenAI lists it."""
    return {
        "id": name,
        "object": "model",
        "created": 1715367049,
        "owned_by": "library" if ":" in name else "system",
    }


async def list_models(_request: Request) -> Response:
    """GET /v1/models: every model the fake knows."""
    return openai_json({"object": "list", "data": [model_card(name) for name in MODELS]})


async def retrieve_model(request: Request) -> Response:
    """GET /v1/models/{id}; the id may hold a tag (`llama3:latest`)."""
    name = request.path_params["model"]
    if name in MODELS:
        return openai_json(model_card(name))
    return openai_error(
        404, f"The model '{name}' does not exist", "invalid_request_error", "model", "model_not_found"
    )


async def transcriptions(request: Request) -> Response:
    """POST /v1/audio/transcriptions (multipart); usage in tokens, input tokens = audio bytes."""
    form = await request.form()
    model, upload = form.get("model"), form.get("file")
    if not isinstance(upload, UploadFile) or not isinstance(model, str):
        return openai_error(400, "you must provide a model and a file", "invalid_request_error")
    if model not in MODELS:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return openai_error(404, message, "invalid_request_error", code="model_not_found")
    audio = await upload.read()
    t = Turn(model, max(1, len(audio)), DEFAULT_COMPLETION, False, 0.0)
    if form.get("response_format") == "text":
        return PlainTextResponse(f"{t.text}\n")
    usage = {
        "type": "tokens",
        "input_tokens": t.prompt,
        "input_token_details": {"text_tokens": 0, "audio_tokens": t.prompt},
        "output_tokens": t.completion,
        "total_tokens": t.prompt + t.completion,
    }
    return openai_json({"text": t.text} | ({} if t.silent else {"usage": usage}))


async def speech(request: Request) -> Response:
    """POST /v1/audio/speech: audio bytes, streamed one frame per word of `input`."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    media_type = AUDIO_TYPES.get(str(body.get("response_format", "mp3")), "audio/mpeg")
    return streamed([MP3_FRAME] * max(1, words(body.get("input"))), fake_gap(request), media_type)


async def images(request: Request) -> Response:
    """POST /v1/images/generations: base64 PNGs and gpt-image-style token usage."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    count = positive(body.get("n"), 1)
    prompt, output = max(1, words(body.get("prompt"))), DEFAULT_COMPLETION * count
    usage = {
        "total_tokens": prompt + output,
        "input_tokens": prompt,
        "output_tokens": output,
        "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
    }
    answer = {"created": now(), "data": [{"b64_json": base64.b64encode(PNG).decode()}] * count}
    return openai_json(answer | ({} if body["model"] == SILENT else {"usage": usage}))


async def moderations(request: Request) -> Response:
    """POST /v1/moderations: nothing flagged; moderation is not metered (no usage)."""
    body = await openai_body(request, model=False)
    if isinstance(body, Response):
        return body
    given = body.get("input")
    result = {
        "flagged": False,
        "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 1e-06),
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }
    results = [result] * (len(given) if isinstance(given, list) else 1)
    model = body.get("model", "omni-moderation-latest")
    return openai_json({"id": new_id("modr-"), "model": model, "results": results})


async def files(request: Request) -> Response:
    """GET /v1/files lists what POST /v1/files (multipart: file, purpose) stored."""
    if request.method == "GET":
        first, last = (FILES[0]["id"], FILES[-1]["id"]) if FILES else (None, None)
        return openai_json(
            {"object": "list", "data": FILES, "first_id": first, "last_id": last, "has_more": False}
        )
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return openai_error(400, "Missing required parameter: 'file'.", "invalid_request_error", "file")
    stored = {
        "object": "file",
        "id": new_id("file-"),
        "purpose": form.get("purpose"),
        "filename": upload.filename,
        "bytes": len(await upload.read()),
        "created_at": now(),
        "expires_at": None,
        "status": "processed",
        "status_details": None,
    }
    FILES.append(stored)
    return openai_json(stored)


async def fine_tuning_jobs(request: Request) -> Response:
    """POST /v1/fine_tuning/jobs: a queued job."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    auto = {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
    job = {
        "object": "fine_tuning.job",
        "id": new_id("ftjob-"),
        "model": body["model"],
        "created_at": now(),
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-fake",
        "result_files": [],
        "status": "validating_files",
        "validation_file": body.get("validation_file"),
        "training_file": body.get("training_file"),
        "hyperparameters": auto,
        "method": {"type": "supervised", "supervised": {"hyperparameters": auto}},
        "trained_tokens": None,
        "error": None,
        "seed": body.get("seed", 42),
        "estimated_finish": None,
        "integrations": [],
        "metadata": body.get("metadata"),
    }
    return openai_json(job)


async def batches(request: Request) -> Response:
    """POST /v1/batches: a batch being validated."""
    body = await openai_body(request, model=False)
    if isinstance(body, Response):
        return body
    later: Json = {
        "output_file_id": None,
        "error_file_id": None,
        "in_progress_at": None,
        "expires_at": None,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
    }
    batch = {
        "id": new_id("batch_"),
        "object": "batch",
        "endpoint": body.get("endpoint"),
        "errors": None,
        "input_file_id": body.get("input_file_id"),
        "completion_window": body.get("completion_window", "24h"),
        "status": "validating",
        "created_at": now(),
    }
    counts = {"request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
    return openai_json(batch | later | counts)


# --- Ollama ----------------------------------------------------------------------------------


def ollama_json(obj: Json, status: int = 200) -> Response:
    """Gin's c.JSON: compact Go JSON, no trailing newline, with a charset."""
    return Response(go_json(obj), status, media_type="application/json; charset=utf-8")


def ollama_error(status: int, message: str) -> Response:
    return ollama_json({"error": message}, status)


async def ollama_body(request: Request, *, model: bool = True) -> Json | Response:
    """The JSON body, or Ollama's error when it is not JSON or (if `model`) names no known model."""
    body = await payload(request)
    if body is None:
        return ollama_error(400, "invalid character looking for beginning of value")
    if not model:
        return body
    if not body.get("model"):
        return ollama_error(400, "model is required")
    if body["model"] not in MODELS:
        return ollama_error(404, f"model '{body['model']}' not found")
    return body


def ndjson(objects: Iterable[Json]) -> Iterator[bytes]:
    for obj in objects:
        yield go_json(obj) + b"\n"


def metrics(t: Turn) -> Json:
    """The final object's counts and durations (ns); Go's omitempty drops zero ones."""
    load, prompt_eval, evaluation = 1_000_000, t.prompt * 1_000_000, t.completion * 10_000_000
    counts = {
        "prompt_eval_count": t.prompt,
        "prompt_eval_duration": prompt_eval,
        "eval_count": t.completion,
        "eval_duration": evaluation,
    }
    head = {"total_duration": load + prompt_eval + evaluation, "load_duration": load}
    return head if t.silent else head | counts


def ollama_answer(request: Request, body: Json, key: str, final: Callable[[Turn], Json]) -> Response:
    """Stream by default (NDJSON, counts only in the last object); `"stream": false` gives one object."""
    t = turn(request, body, body.get("messages") if key == "message" else body.get("prompt"))

    def said(text: str) -> Json:
        head = {"model": t.model, "created_at": go_time()}  # stamped as each object is written
        return head | (
            {"message": {"role": "assistant", "content": text}} if key == "message" else {"response": text}
        )

    def lines() -> Iterator[Json]:
        for piece in t.pieces:
            yield said(piece) | {"done": False}
        yield said("") | final(t)

    if body.get("stream") is False:
        return ollama_json(said(t.text) | final(t))
    return streamed(ndjson(lines()), t.gap, "application/x-ndjson")


async def ollama_chat(request: Request) -> Response:
    """POST /api/chat; no messages only loads the model (done_reason "load", no counts)."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    if not body.get("messages"):
        message = {"role": "assistant", "content": ""}
        return ollama_json(
            {
                "model": body["model"],
                "created_at": go_time(),
                "message": message,
                "done": True,
                "done_reason": "load",
            }
        )
    return ollama_answer(
        request, body, "message", lambda t: {"done": True, "done_reason": t.finish} | metrics(t)
    )


async def ollama_generate(request: Request) -> Response:
    """POST /api/generate; an empty prompt only loads the model; `context` unless `raw`."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    if not body.get("prompt"):
        return ollama_json(
            {
                "model": body["model"],
                "created_at": go_time(),
                "response": "",
                "done": True,
                "done_reason": "load",
            }
        )

    def final(t: Turn) -> Json:
        context = {} if body.get("raw") else {"context": list(range(1, t.prompt + t.completion + 1))}
        return {"done": True, "done_reason": t.finish} | context | metrics(t)

    return ollama_answer(request, body, "response", final)


async def ollama_embed(request: Request) -> Response:
    """POST /api/embed: one vector per input, and `prompt_eval_count`."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    given = body.get("input")
    inputs = given if isinstance(given, list) else [given]
    answer = {"model": body["model"], "embeddings": [vector(i, 8) for i in range(len(inputs))]}
    t = Turn(body["model"], max(1, words(inputs)), 0, False, 0.0)
    counts = {} if t.silent else {"prompt_eval_count": t.prompt}
    return ollama_json(answer | {"total_duration": 2_000_000, "load_duration": 1_000_000} | counts)


async def ollama_embeddings(request: Request) -> Response:
    """POST /api/embeddings, the legacy one: a vector and no counts at all."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    return ollama_json({"embedding": vector(0, 8) if body.get("prompt") else []})


def details(name: str) -> Json:
    """A model's `details` as Ollama lists it."""
    family, size = MODELS[name]
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "Q4_0" if size else "",
    }


def digest(name: str) -> str:
    """A stable fake sha256 digest for a model."""
    return hashlib.sha256(name.encode()).hexdigest()


async def ollama_tags(_request: Request) -> Response:
    """GET /api/tags: every model the fake knows, as pulled."""
    models = [
        {
            "name": n,
            "model": n,
            "modified_at": MODIFIED_AT,
            "size": 4_661_224_676,
            "digest": digest(n),
            "details": details(n),
        }
        for n in MODELS
    ]
    return ollama_json({"models": models})


async def ollama_ps(_request: Request) -> Response:
    """GET /api/ps: every model, as loaded for five more minutes."""
    expires = go_time(datetime.now(UTC) + timedelta(minutes=5))
    models = [
        {"name": n, "model": n, "size": 5_137_025_024, "digest": digest(n), "details": details(n)}
        | {"expires_at": expires, "size_vram": 5_137_025_024, "context_length": 4096}
        for n in MODELS
    ]
    return ollama_json({"models": models})


async def ollama_show(request: Request) -> Response:
    """POST /api/show: details, model_info and capabilities."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    name, family = body["model"], MODELS[body["model"]][0]
    capabilities = ["embedding"] if family == "bert" else ["completion"]
    return ollama_json(
        {
            "license": "fake license",
            "modelfile": f'# Modelfile generated by "ollama show"\nFROM {name}\n',
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": details(name),
            "model_info": {"general.architecture": family, f"{family}.context_length": 8192},
            "capabilities": capabilities,
            "modified_at": MODIFIED_AT,
        }
    )


def progress(request: Request, body: Json, statuses: list[Json]) -> Response:
    """Pull, push and create report progress as NDJSON, or only the last status when not streaming."""
    if body.get("stream") is False:
        return ollama_json(statuses[-1])
    return streamed(ndjson(statuses), fake_gap(request), "application/x-ndjson")


async def ollama_pull(request: Request) -> Response:
    """POST /api/pull: any name pulls (the fake has a registry of everything)."""
    body = await ollama_body(request, model=False)
    if isinstance(body, Response):
        return body
    if not (name := body.get("model") or body.get("name")):
        return ollama_error(400, "invalid model name")
    layer = {"status": f"pulling {digest(name)[:12]}", "digest": f"sha256:{digest(name)}", "total": 1024}
    statuses: list[Json] = [{"status": "pulling manifest"}, layer, layer | {"completed": 1024}]
    statuses += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
    return progress(request, body, statuses)


async def ollama_push(request: Request) -> Response:
    """POST /api/push: progress statuses, then success."""
    body = await ollama_body(request)
    if isinstance(body, Response):
        return body
    statuses = [{"status": "retrieving manifest"}, {"status": "pushing manifest"}, {"status": "success"}]
    return progress(request, body, statuses)


async def ollama_create(request: Request) -> Response:
    """POST /api/create: progress statuses, then success."""
    body = await ollama_body(request, model=False)
    if isinstance(body, Response):
        return body
    if not body.get("model"):
        return ollama_error(400, "model is required")
    statuses = [{"status": "reading model metadata"}, {"status": "creating system layer"}]
    statuses += [{"status": "writing manifest"}, {"status": "success"}]
    return progress(request, body, statuses)


async def ollama_copy(request: Request) -> Response:
    """POST /api/copy: 200 with an empty body, as gin sends it."""
    body = await ollama_body(request, model=False)
    if isinstance(body, Response):
        return body
    if body.get("source") not in MODELS:
        return ollama_error(404, f'model "{body.get("source")}" not found')
    return Response(status_code=200)


async def ollama_delete(request: Request) -> Response:
    """DELETE /api/delete (a JSON body naming `model`): 200 with an empty body; the list stays as is."""
    body = await ollama_body(request, model=False)
    if isinstance(body, Response):
        return body
    name = body.get("model") or body.get("name")
    if name not in MODELS:
        return ollama_error(404, f"model '{name}' not found")
    return Response(status_code=200)


async def ollama_blob(request: Request) -> Response:
    """HEAD says whether a blob is here; POST stores one if its bytes match the sha256 digest."""
    name = request.path_params["digest"]
    if request.method == "HEAD":
        return Response(status_code=200 if name in BLOBS else 404)
    if name in BLOBS:
        return Response(status_code=200)
    got = "sha256:" + hashlib.sha256(await request.body()).hexdigest()
    if got != name:
        return ollama_error(400, f'digest mismatch, expected "{name}", got "{got}"')
    BLOBS.add(name)
    return Response(status_code=201)


async def ollama_version(_request: Request) -> Response:
    """GET /api/version."""
    return ollama_json({"version": OLLAMA_VERSION})


async def ollama_root(_request: Request) -> Response:
    """GET / answers as Ollama does, for health checks."""
    return PlainTextResponse("Ollama is running")


ENDPOINTS: list[tuple[str, Endpoint, list[str]]] = [
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/v1/completions", completions, ["POST"]),
    ("/v1/embeddings", embeddings, ["POST"]),
    ("/v1/responses", responses, ["POST"]),
    ("/v1/models", list_models, ["GET"]),
    ("/v1/models/{model:path}", retrieve_model, ["GET"]),
    ("/v1/audio/transcriptions", transcriptions, ["POST"]),
    ("/v1/audio/speech", speech, ["POST"]),
    ("/v1/images/generations", images, ["POST"]),
    ("/v1/moderations", moderations, ["POST"]),
    ("/v1/files", files, ["GET", "POST"]),
    ("/v1/fine_tuning/jobs", fine_tuning_jobs, ["POST"]),
    ("/v1/batches", batches, ["POST"]),
    ("/", ollama_root, ["GET", "HEAD"]),
    ("/api/chat", ollama_chat, ["POST"]),
    ("/api/generate", ollama_generate, ["POST"]),
    ("/api/embed", ollama_embed, ["POST"]),
    ("/api/embeddings", ollama_embeddings, ["POST"]),
    ("/api/show", ollama_show, ["POST"]),
    ("/api/tags", ollama_tags, ["GET", "HEAD"]),
    ("/api/ps", ollama_ps, ["GET"]),
    ("/api/pull", ollama_pull, ["POST"]),
    ("/api/push", ollama_push, ["POST"]),
    ("/api/create", ollama_create, ["POST"]),
    ("/api/copy", ollama_copy, ["POST"]),
    ("/api/delete", ollama_delete, ["DELETE"]),
    ("/api/blobs/{digest}", ollama_blob, ["HEAD", "POST"]),
    ("/api/version", ollama_version, ["GET", "HEAD"]),
]
ROUTES = [Route("/__requests", requests_log, methods=["GET", "DELETE"])] + [
    Route(path, recorded(endpoint), methods=methods) for path, endpoint, methods in ENDPOINTS
]
app = Starlette(routes=ROUTES)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
