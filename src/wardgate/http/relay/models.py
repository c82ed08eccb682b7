"""Model calls through the relay: the model rule, the budget, and the usage of each call.

After admission (`wardgate.proxy.admission`), a request that `wardgate.proxy.models.classify`
recognises is handled here, before the upstream is contacted:

- using a model: the body is read whole (at most `MODEL_REQUEST_MAX_BYTES`, else 413), the model
  read from it (JSON, or the `model` field of a multipart form), the caller's rules applied (403
  naming the model), the budgets charged (429 when one is used up; 503 when they cannot be read),
  then the call is forwarded with a `UsageTap` on its answer; its record and the budgets' final
  charge are written once the answer is over;
- listing models: the answer is filtered to what the caller may use;
- naming a model in the path: the same rule, from the path;
- managing the model server: the configured roles only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator
from functools import partial

import anyio.to_thread
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import Send

from wardgate.errors import (
    BadRequestError,
    PermissionDeniedError,
    RateLimitedError,
    TooLargeError,
    UnsupportedMediaError,
)
from wardgate.gateway import Gateway
from wardgate.http.deps import gateway
from wardgate.http.relay.streaming import Exchange, ReverseProxy
from wardgate.http.scope import declared_length
from wardgate.identity.authentication import Caller, KeyPrincipal
from wardgate.proxy.acting import is_service_key
from wardgate.proxy.models import Kind, ModelCall, ModelRules
from wardgate.proxy.upstreams import Upstream
from wardgate.usage.budgets import Reservation
from wardgate.usage.recorder import CallRecord
from wardgate.usage.wire import Format, ModelRequest, UsageTap, form_request, read_json_request

UNMETERED_ENDPOINTS = frozenset({"api/show"})  # uses no tokens: ruled, not metered
BYTES_PER_TOKEN = 4  # for an estimate, when an answer reports no usage (a rough mean for text)
LARGE_JSON = 64 * 1024  # bytes: a body this large is parsed in a worker thread, off the event loop
# Such parses at once, per process: each holds about twenty times the body's size while it is read,
# and the duplicate-key check is Python that holds the interpreter lock (eight 4 MiB bodies at once
# took 394 MiB and stalled the loop for a second; found by review). The others wait their turn.
LARGE_PARSES = 2
BACKGROUND_UNMETERED = (
    "A background response is answered elsewhere, later, and cannot be counted against your budget: "
    "send the request without background."
)


async def forward_model_call(
    request: Request,
    caller: Caller,
    upstream: Upstream,
    call: ModelCall,
    send: Send,
    *,
    chat_id: str | None = None,
) -> None:
    """Apply the model rules (and budgets, and metering) to one call, then forward it. `chat_id`:
    the Open WebUI chat a service key's call belongs to, recorded with its usage."""
    gw = gateway(request)
    proxy: ReverseProxy = request.app.state.proxy
    rules = gw.model_rules
    if call.kind is Kind.MANAGE:
        if is_service_key(caller):  # Open WebUI's server uses and lists models; it manages nothing
            raise PermissionDeniedError(
                "A service key uses models; managing the model servers is for administrators' own "
                "sessions and keys.",
                code="service_key_scope",
            )
        rules.require_manager(caller)
        await proxy.forward(request, caller, upstream, send)
    elif call.kind is Kind.NAMED:
        rules.require(caller, call.named)
        await proxy.forward(request, caller, upstream, send)
    elif call.kind is Kind.LIST:
        rewrite = partial(_filtered_list, rules, caller, call)
        await proxy.forward(request, caller, upstream, send, rewrite=rewrite)
    else:
        await _use(request, gw, proxy, caller, upstream, call, send, chat_id)


async def _use(
    request: Request,
    gw: Gateway,
    proxy: ReverseProxy,
    caller: Caller,
    upstream: Upstream,
    call: ModelCall,
    send: Send,
    chat_id: str | None,
) -> None:
    try:
        body = await _read_body(request, gw.model_rules.max_request_bytes)
    except ClientDisconnect:
        return  # nobody to answer
    wanted = await _wanted(request, call, body)
    model = gw.model_rules.require(caller, wanted.model)
    forwarded = wanted.body if wanted.body else body
    if call.endpoint in UNMETERED_ENDPOINTS:
        await proxy.forward(request, caller, upstream, send, read_body=forwarded)
        return
    user = caller.user
    found = gw.model_rules.allowances(user, caller.key if isinstance(caller, KeyPrincipal) else None)
    reservation = Reservation((), wanted.max_tokens or 0)  # no budget applies: nothing to count
    if found and wanted.background:
        raise BadRequestError(BACKGROUND_UNMETERED, code="background_not_metered")
    if found:
        try:
            reservation = await anyio.to_thread.run_sync(
                partial(gw.budgets.reserve, found, reservation.tokens)
            )
        except RateLimitedError as exc:
            gw.audit.refused("usage.budget_exhausted", exc, actor=user.email, subject=user.email)
            raise
    metered = _MeteredCall(gw, caller, upstream, call, wanted, model, reservation, len(forwarded), chat_id)
    try:
        await proxy.forward(
            request,
            caller,
            upstream,
            send,
            read_body=forwarded,
            tap=metered.tap,
            exchange=metered.exchange,
            before_end=metered.settle,
        )
    finally:
        await metered.settle()  # if the answer broke off before its end
        gw.usage.add(metered.record())


class _MeteredCall:
    """One forwarded model call: its tap, how the exchange went, and its budgets' final charge."""

    def __init__(
        self,
        gw: Gateway,
        caller: Caller,
        upstream: Upstream,
        call: ModelCall,
        wanted: ModelRequest,
        model: str,
        reservation: Reservation,
        sent: int,
        chat_id: str | None,
    ) -> None:
        self.gw, self.caller, self.upstream, self.call = gw, caller, upstream, call
        self.wanted, self.model, self.reservation, self.sent = wanted, model, reservation, sent
        self.chat_id = chat_id
        self.tap = UsageTap(call.format, streamed=wanted.stream, strip=wanted.asks_usage)
        self.exchange = Exchange()
        self.at, self.started = int(time.time()), time.monotonic()
        self._settled = False

    async def settle(self) -> None:
        """Charge the budgets what the call used, once (before the answer's end reaches the client)."""
        if self._settled:
            return
        self._settled = True
        if self.reservation.counters:  # no budget, no database work (and no thread hop)
            await anyio.to_thread.run_sync(self.gw.budgets.settle, self.reservation, self.used())

    def used(self) -> int:
        """Tokens to charge: the reported ones; none for a call the upstream refused or never
        answered; for an answer that reports nothing (a server that never does, a client that left
        before the usage came), an estimate of one token per `BYTES_PER_TOKEN` sent and received,
        at least what was reserved."""
        if self.tap.usage is not None:
            return self.tap.usage.total
        if not 200 <= self.exchange.status < 300:
            return 0
        estimate = (self.sent + self.tap.seen) // BYTES_PER_TOKEN
        return max(estimate, self.reservation.tokens)

    def record(self) -> CallRecord:
        usage, exchange, key = self.tap.usage, self.exchange, self.caller
        first = exchange.first_byte
        return CallRecord(
            at=self.at,
            user_id=self.caller.user.id,
            api_key_id=key.key.id if isinstance(key, KeyPrincipal) else None,
            upstream=self.upstream.name,
            endpoint=self.call.endpoint,
            model=self.model[:200],
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            ttfb_ms=int((first - self.started) * 1000) if first is not None else None,
            status=exchange.status,
            streamed=self.wanted.stream,
            complete=exchange.complete and (self.tap.finished or not self.wanted.stream),
            metered=usage is not None,
            chat_id=self.chat_id,
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def _wanted(request: Request, call: ModelCall, body: bytes) -> ModelRequest:
    """What the call asks for. The body must be uncompressed; OpenAI-format calls must say their body
    is JSON (a server that parsed it as a form would read another model); Ollama parses JSON whatever
    the header says."""
    if any(coding.strip().lower() not in ("", "identity") for coding in _codings(request)):
        # wardgate reads the bytes as they came; a server that decompresses them would read another
        # request (a model, a budget's hints) than the one the rules were applied to.
        raise UnsupportedMediaError("A model request's body is sent uncompressed (no Content-Encoding).")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if call.multipart:
        if media != "multipart/form-data":
            raise UnsupportedMediaError(
                "This request takes multipart/form-data.", code="unsupported_media_type"
            )
        return await _multipart_model(request, body)
    if call.format is not Format.OLLAMA and media != "application/json":
        raise UnsupportedMediaError("This request takes application/json.")
    read = partial(read_json_request, body, call.format, call.endpoint)
    if len(body) <= LARGE_JSON:
        return read()
    limiter: anyio.CapacityLimiter = request.app.state.large_parses
    return await anyio.to_thread.run_sync(read, limiter=limiter)


def _codings(request: Request) -> list[str]:
    """Every content coding the request names, in every Content-Encoding header."""
    return [coding for value in request.headers.getlist("content-encoding") for coding in value.split(",")]


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(f"A model request may be at most {limit} bytes.", code="model_request_too_large")


_PARAMETER = re.compile(rb";\s*([^\s;=]+)\s*=")  # the parameter names of a header's value


class _PlainParts(MultiPartParser):
    """Starlette's multipart parser, refusing the parts that parsers read differently.

    The form goes on to the model server as it came, so wardgate must read the `model` field as the
    server will. A part with two Content-Disposition headers (python-multipart keeps the last, Go's
    textproto, busboy and werkzeug the first), a `name` given twice, or an extended `name*` (RFC
    2231; Go's mime package prefers it, python-multipart ignores it) named one field for wardgate
    and another for the server (found by review).
    """

    async def parse(self) -> FormData:
        """The form, refused (MultiPartException) when its Content-Type repeats a parameter (two
        boundaries: python-multipart takes the last) or names a charset other than UTF-8: Starlette
        decodes names and values in it, servers that ignore it read other names (a field `model`
        spelled in EBCDIC was another field for them, found by review)."""
        content_type = self.headers.get("content-type", "").encode("latin-1")
        parameters = [p.lower() for p in _PARAMETER.findall(content_type)]
        if len(parameters) != len(set(parameters)):
            raise MultiPartException("its Content-Type repeats a parameter")
        charset = parse_options_header(content_type)[1].get(b"charset")
        if charset is not None and charset.lower() not in (b"utf-8", b"utf8"):
            raise MultiPartException("a form is read as UTF-8, in no other charset")
        return await super().parse()

    def on_headers_finished(self) -> None:
        fields = [name for name, _ in self._current_part.item_headers]
        if len(fields) != len(set(fields)):
            raise MultiPartException("a part repeats a header")
        disposition = self._current_part.content_disposition or b""
        names = [p.lower() for p in _PARAMETER.findall(disposition)]
        if names.count(b"name") > 1 or any(p.startswith(b"name*") for p in names):
            raise MultiPartException("a part names its field twice, or in an extended form (name*)")
        super().on_headers_finished()


async def _multipart_model(request: Request, body: bytes) -> ModelRequest:
    """The `model` field of a multipart form (audio, image edits); the files are not kept."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = _PlainParts(Headers(scope=request.scope), stream(), max_files=16, max_fields=64)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequestError(f"The form could not be read: {exc.message}", code="invalid_form") from None
    try:
        models = form.getlist("model")
        if len(models) > 1 or (models and not isinstance(models[0], str)):
            raise BadRequestError("The form must name one model, as a text field.", code="invalid_form")
        return form_request(models[0] if models else None)  # type: ignore[arg-type]
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()


def _filtered_list(rules: ModelRules, caller: Caller, call: ModelCall, body: bytes) -> bytes:
    """A model list with only the models the caller may use (Ollama's `models`, OpenAI's `data`)."""
    try:
        document = json.loads(body)
    except ValueError:
        return _empty_list(call)
    if not isinstance(document, dict):
        return _empty_list(call)
    field, name = ("models", _ollama_name) if call.format is Format.OLLAMA else ("data", _openai_name)
    items = document.get(field)
    if not isinstance(items, list):
        return _empty_list(call)
    document[field] = [item for item in items if (n := name(item)) and rules.may_use(caller, n)]
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _empty_list(call: ModelCall) -> bytes:
    """What a list that cannot be read shows: nothing (never the unfiltered answer)."""
    return b'{"models":[]}' if call.format is Format.OLLAMA else b'{"object":"list","data":[]}'


def _ollama_name(item: object) -> str | None:
    if not isinstance(item, dict):
        return None
    found = item.get("name", item.get("model"))
    return found if isinstance(found, str) else None


def _openai_name(item: object) -> str | None:
    found = item.get("id") if isinstance(item, dict) else None
    return found if isinstance(found, str) else None
