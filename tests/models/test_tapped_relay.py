"""A metered stream is relayed in slices: an upstream read holding a flood of events reaches the
client a slice at a time, the first event after one slice is looked at, not after the whole read;
the bytes and the usage are those of the whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from wardgate.http.relay.streaming import TAPPED_SLICE, _relay, _Shaping
from wardgate.observability.metrics import UpstreamCall
from wardgate.proxy.client import Cancellation
from wardgate.usage.wire import Format, Usage, UsageTap

pytestmark = pytest.mark.anyio


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class Answer:
    """An upstream answer that arrives as the given reads."""

    status = 200
    headers = [(b"content-type", b"text/event-stream")]

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    async def chunks(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read


async def test_a_flood_read_at_once_leaves_in_slices_with_its_bytes_and_usage_whole() -> None:
    chunk = {"id": "c", "choices": [{"delta": {"content": "tok"}}], "usage": None}
    flood = b"".join(event(chunk) for _ in range(400))  # one read of ~30 KiB, as a flood arrives
    last = event({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 400}})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    tap = UsageTap(Format.OPENAI, streamed=True, strip=True)
    answer = Answer([flood, last + b"data: [DONE]\n\n"])
    await _relay(answer, Cancellation(), send, _Shaping(UpstreamCall("openai"), tap))  # type: ignore[arg-type]

    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert len(flood) > 3 * TAPPED_SLICE
    assert len([b for b in bodies if b]) >= len(flood) // TAPPED_SLICE  # the read left in slices
    assert max(map(len, bodies)) <= TAPPED_SLICE
    stripped = event({"id": "c", "choices": [{"delta": {"content": "tok"}}]})
    assert b"".join(bodies) == stripped * 400 + b"data: [DONE]\n\n"  # every event, usage taken out
    assert tap.usage == Usage(4, 400)
