"""The fake model server (tests.fakes.models) is faithful: the real `openai` SDK and the real `ollama`
package parse every answer, and the token numbers they expose are the predicted ones.

Where a client library hides the wire (a key absent or null, the `[DONE]` line, content types),
httpx reads the raw bytes, since that is what wardgate's meter will read.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types.chat import ChatCompletionMessageParam

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
WORDS5 = "w0 w1 w2 w3 w4"


@pytest.fixture(scope="module")
def base(models_server: str) -> str:
    """The fake model server's base URL (tests/models/conftest.py starts it once)."""
    return models_server


@pytest.fixture(scope="module")
def openai_client(base: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def ollama_client(base: str) -> Iterator[ollama.Client]:
    with ollama.Client(host=base) as client:
        yield client


def sse_data(base: str, path: str, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a raw server-sent event stream."""
    with httpx.stream("POST", f"{base}{path}", json=body, timeout=5) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "say three words"},
]


# --- OpenAI, through the openai SDK -----------------------------------------------------------


def test_chat_completion_usage(openai_client: OpenAI) -> None:
    completion = openai_client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == WORDS5
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 5, 10)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_limit_sets_completion_and_finish_reason(openai_client: OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="llama3:latest",
        messages=[{"role": "user", "content": [{"type": "text", "text": "two words"}]}],
        max_completion_tokens=3,
    )
    assert completion.choices[0].message.content == "w0 w1 w2"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)


def test_chat_stream_without_include_usage_has_no_usage(openai_client: OpenAI, base: str) -> None:
    with openai_client.chat.completions.create(model="gpt-4o", messages=CHAT, stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == WORDS5
    assert all(c.usage is None and c.choices for c in chunks)
    raw = sse_data(base, "/v1/chat/completions", {"model": "gpt-4o", "messages": CHAT, "stream": True})
    assert raw[-1] == "[DONE]"
    assert not any("usage" in json.loads(data) for data in raw[:-1])  # no key at all, not even null


def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(openai_client: OpenAI, base: str) -> None:
    with openai_client.chat.completions.create(
        model="gpt-4o",
        messages=CHAT,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=4,
    ) as stream:
        chunks = list(stream)
    *content, last = chunks
    assert all(c.usage is None and c.choices for c in content)
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 4, 9)
    assert content[-1].choices[0].finish_reason == "length"
    body = {"model": "gpt-4o", "messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    raw = [json.loads(data) for data in sse_data(base, "/v1/chat/completions", body)[:-1]]
    assert all(chunk["usage"] is None for chunk in raw[:-1])  # the key is there, null
    assert raw[-1]["choices"] == [] and raw[-1]["usage"]["total_tokens"] == 10


def test_stream_options_without_stream_is_rejected_as_openai_does(openai_client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=CHAT, stream_options={"include_usage": True}
        )
    assert caught.value.param == "stream_options"


def test_legacy_completions(openai_client: OpenAI) -> None:
    completion = openai_client.completions.create(model="gpt-4o-mini", prompt="one two three four")
    assert completion.choices[0].text == WORDS5
    assert completion.usage is not None and completion.usage.prompt_tokens == 4
    with openai_client.completions.create(
        model="gpt-4o-mini", prompt="one", stream=True, stream_options={"include_usage": True}, max_tokens=2
    ) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "w0 w1"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 3


def test_embeddings_base64_and_float(openai_client: OpenAI) -> None:
    default = openai_client.embeddings.create(model="text-embedding-3-small", input=["a b", "c d e"])
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8  # sent as base64, decoded
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (5, 5)
    floats = openai_client.embeddings.create(
        model="text-embedding-3-small", input="x", encoding_format="float", dimensions=4
    )
    assert len(floats.data[0].embedding) == 4 and floats.usage.prompt_tokens == 1


def test_responses_usage(openai_client: OpenAI) -> None:
    response = openai_client.responses.create(model="gpt-4o", input="tell me a joke", max_output_tokens=7)
    assert response.output_text == " ".join(f"w{i}" for i in range(7))
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        4,
        7,
        11,
    )
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_stream_events(openai_client: OpenAI) -> None:
    with openai_client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}],
        stream=True,
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    first, last = events[0], events[-1]
    assert first.type == "response.created" and first.response.usage is None
    assert last.type == "response.completed" and last.response.usage is not None
    assert (last.response.usage.input_tokens, last.response.usage.output_tokens) == (2, 5)
    assert last.response.output_text == WORDS5


def test_reasoning_model_reports_reasoning_tokens(openai_client: OpenAI) -> None:
    completion = openai_client.chat.completions.create(model="reason-model", messages=CHAT)
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 2
    assert completion.usage.completion_tokens == 5  # reasoning is counted inside completion tokens
    response = openai_client.responses.create(model="reason-model", input="why")
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 2


def test_models_list_and_retrieve(openai_client: OpenAI) -> None:
    names = [model.id for model in openai_client.models.list()]
    assert {"llama3:latest", "gpt-4o-mini", "whisper-1", "silent-model"} <= set(names)
    model = openai_client.models.retrieve("llama3:latest")
    assert (model.id, model.object, model.owned_by) == ("llama3:latest", "model", "library")
    assert openai_client.models.retrieve("gpt-4o").owned_by == "system"


def test_unknown_model_is_openai_404(openai_client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as caught:
        openai_client.chat.completions.create(model="gpt-9", messages=CHAT)
    assert caught.value.code == "model_not_found" and caught.value.type == "invalid_request_error"
    with pytest.raises(NotFoundError):
        openai_client.models.retrieve("gpt-9")


def test_audio_transcription_and_speech(openai_client: OpenAI) -> None:
    audio = b"RIFF" + bytes(60)
    transcription = openai_client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio, "audio/wav")
    )
    assert transcription.text == WORDS5
    usage = transcription.usage
    assert usage is not None and usage.type == "tokens"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (64, 5, 69)
    speech = openai_client.audio.speech.create(model="tts-1", voice="alloy", input="hello there")
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert speech.content.startswith(b"\xff\xfb") and len(speech.content) == 2 * 417


def test_images(openai_client: OpenAI) -> None:
    image = openai_client.images.generate(model="dall-e-3", prompt="a red fox", n=2)
    assert image.data is not None and len(image.data) == 2
    assert base64.b64decode(image.data[0].b64_json or "").startswith(b"\x89PNG")
    assert image.usage is not None
    assert (image.usage.input_tokens, image.usage.output_tokens, image.usage.total_tokens) == (3, 10, 13)


def test_management_paths(openai_client: OpenAI) -> None:
    moderation = openai_client.moderations.create(input=["fine", "also fine"])
    assert len(moderation.results) == 2 and not moderation.results[0].flagged
    uploaded = openai_client.files.create(file=("train.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    assert (uploaded.bytes, uploaded.filename, uploaded.status) == (9, "train.jsonl", "processed")
    assert uploaded.id in [f.id for f in openai_client.files.list()]
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    assert (job.object, job.training_file) == ("fine_tuning.job", uploaded.id)
    batch = openai_client.batches.create(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id=uploaded.id
    )
    assert (batch.object, batch.status, batch.input_file_id) == ("batch", "validating", uploaded.id)


def test_silent_model_has_no_usage_anywhere(openai_client: OpenAI, base: str) -> None:
    completion = openai_client.chat.completions.create(model="silent-model", messages=CHAT)
    assert completion.usage is None and completion.choices[0].message.content == WORDS5
    body = {
        "model": "silent-model",
        "messages": CHAT,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = sse_data(base, "/v1/chat/completions", body)
    assert raw[-1] == "[DONE]" and not any("usage" in json.loads(data) for data in raw[:-1])
    response = openai_client.responses.create(model="silent-model", input="hi")
    assert response.usage is None


def test_requests_are_recorded(openai_client: OpenAI, base: str) -> None:
    httpx.delete(f"{base}/__requests")
    openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=CHAT,
        extra_headers={"x-trace": "t1"},
    )
    openai_client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"abc", "audio/wav"))
    chat, audio = httpx.get(f"{base}/__requests").json()
    assert (chat["method"], chat["path"]) == ("POST", "/v1/chat/completions")
    assert chat["json"] == {"model": "gpt-4o-mini", "messages": CHAT}
    assert chat["headers"]["authorization"] == "Bearer x" and chat["headers"]["x-trace"] == "t1"
    assert audio["form"] == {"model": "whisper-1", "file": {"filename": "a.wav", "size": 3}}


def test_gap_header_paces_a_stream_and_a_client_may_leave(base: str) -> None:
    body = {"model": "gpt-4o", "messages": CHAT, "stream": True}
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=body, headers={"x-fake-gap": "0.05"}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert len(lines) == 8 and time.monotonic() - started >= 0.3  # 8 events, 7 gaps
    with httpx.stream("POST", f"{base}/api/chat", json=body, headers={"x-fake-gap": "0.2"}) as response:
        assert json.loads(next(response.iter_lines()))["done"] is False  # then leave mid-stream
    assert httpx.get(f"{base}/api/version").status_code == 200


# --- Ollama, through the ollama package -------------------------------------------------------


def test_ollama_chat_stream_counts_in_the_final_object(ollama_client: ollama.Client, base: str) -> None:
    parts = list(ollama_client.chat(model="llama3:latest", messages=CHAT, stream=True))
    *said, final = parts
    assert "".join(part.message.content or "" for part in said) == WORDS5
    assert all(not part.done and part.eval_count is None for part in said)
    assert final.done and final.done_reason == "stop"
    assert (final.prompt_eval_count, final.eval_count) == (5, 5)
    assert final.total_duration and final.load_duration and final.prompt_eval_duration and final.eval_duration
    with httpx.stream(
        "POST", f"{base}/api/chat", json={"model": "llama3:latest", "messages": CHAT}
    ) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert len([json.loads(line) for line in response.iter_lines()]) == 6  # one object a line


def test_ollama_chat_non_stream_with_num_predict(ollama_client: ollama.Client, base: str) -> None:
    answer = ollama_client.chat(model="mistral:7b", messages=CHAT, options={"num_predict": 3})
    assert answer.message.content == "w0 w1 w2" and answer.done_reason == "length"
    assert (answer.prompt_eval_count, answer.eval_count) == (5, 3)
    raw = httpx.post(f"{base}/api/chat", json={"model": "mistral:7b", "messages": CHAT, "stream": False})
    assert raw.headers["content-type"] == "application/json; charset=utf-8" and b"\n" not in raw.content


def test_ollama_generate(ollama_client: ollama.Client) -> None:
    answer = ollama_client.generate(model="llama3.1:8b", prompt="why is the sky blue")
    assert answer.response == WORDS5 and answer.done
    assert (answer.prompt_eval_count, answer.eval_count) == (5, 5)
    assert answer.context is not None and len(answer.context) == 10
    parts = list(ollama_client.generate(model="llama3.1:8b", prompt="hi", stream=True))
    assert "".join(part.response or "" for part in parts) == WORDS5
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (1, 5)
    loaded = ollama_client.generate(model="llama3.1:8b", prompt="")
    assert loaded.done_reason == "load" and loaded.eval_count is None


def test_ollama_embed_and_legacy_embeddings(ollama_client: ollama.Client) -> None:
    embedded = ollama_client.embed(model="llama3:latest", input=["one two", "three"])
    assert len(embedded.embeddings) == 2 and embedded.prompt_eval_count == 3
    legacy = ollama_client.embeddings(model="llama3:latest", prompt="one two")
    assert len(legacy.embedding) == 8


def test_ollama_list_ps_show(ollama_client: ollama.Client) -> None:
    listed = [model.model for model in ollama_client.list().models]
    assert {"llama3:latest", "llama3.1:8b", "mistral:7b", "silent-model"} <= set(listed)
    running = ollama_client.ps().models
    assert running[0].model == "llama3:latest" and running[0].expires_at is not None
    shown = ollama_client.show("llama3:latest")
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.capabilities == ["completion"] and shown.modelinfo


def test_ollama_management(ollama_client: ollama.Client, base: str, tmp_path: Path) -> None:
    pulled = [progress.status for progress in ollama_client.pull("llama3:latest", stream=True)]
    assert pulled[0] == "pulling manifest" and pulled[-1] == "success"
    assert ollama_client.pull("llama3:latest").status == "success"
    assert ollama_client.push("llama3:latest").status == "success"
    assert ollama_client.create(model="mine", from_="llama3:latest").status == "success"
    assert ollama_client.copy("llama3:latest", "copy").status == "success"
    assert ollama_client.delete("mistral:7b").status == "success"
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"not really weights")
    digest = ollama_client.create_blob(blob)
    assert digest.startswith("sha256:")
    assert httpx.head(f"{base}/api/blobs/{digest}").status_code == 200
    version = httpx.get(f"{base}/api/version").json()
    assert set(version) == {"version"}


def test_ollama_unknown_model_is_404(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="nope", messages=CHAT)
    assert caught.value.status_code == 404 and caught.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError):
        list(ollama_client.generate(model="nope", prompt="x", stream=True))


def test_ollama_silent_model_has_no_counts(ollama_client: ollama.Client, base: str) -> None:
    final = list(ollama_client.chat(model="silent-model", messages=CHAT, stream=True))[-1]
    assert final.done and final.prompt_eval_count is None and final.eval_count is None
    raw = httpx.post(
        f"{base}/api/generate", json={"model": "silent-model", "prompt": "x", "stream": False}
    ).json()
    assert raw["done"] and not {"prompt_eval_count", "eval_count"} & set(raw)
    assert ollama_client.embed(model="silent-model", input="x").prompt_eval_count is None
