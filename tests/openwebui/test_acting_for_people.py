"""Issue 19 end to end: two people chat in the real Open WebUI (0.12.4) behind wardgate, in Chromium,
and Open WebUI's server calls a real model server (llama-cpp-python's OpenAI-compatible server with
SmolLM2-135M, ./scripts/setup-model-server) through wardgate's /openai with one service key. Each
person's tokens land on that person, exactly as the model server reported them; a person limited to
another model and a person over budget read wardgate's refusal in the chat; a key without the flag,
and a person's own session, name nobody else.

Open WebUI is told what the README tells an operator: its OpenAI connection at wardgate's /openai
with the service key, ENABLE_FORWARD_USER_INFO_HEADERS=true and the same
FORWARD_USER_INFO_HEADER_JWT_SECRET on both sides, BYPASS_MODEL_ACCESS_CONTROL=true (wardgate
decides who may use which model). Chats are not streamed here: llama-cpp-python's server reports
usage only in whole answers, and the test compares tokens exactly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import PASSWORD, SECRET, bearer
from tests.e2e.browsing import Console, new_context, shoot
from tests.openwebui.conftest import BINARY
from tests.servers import free_port, service_missing, stop, wardgate_process

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
MODELS = ROOT / ".models"
MODEL = "smollm2"
JWT_SECRET = "open-webui-forwarded-user-secret-0123456789abcdef"
MAX_TOKENS = 12


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, ready: str, what: str) -> Iterator[None]:
    """Start a process, wait until `ready` answers 200 (at most 180 s), stop it by its id after."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready, timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield
    finally:
        stop(process)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M; its /v1 URL."""
    python, weights = MODELS / "venv" / "bin" / "python", MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (python.exists() and weights.exists()):
        service_missing("the model server", "run ./scripts/setup-model-server (./scripts/test does)")
    port = free_port()
    args = [str(python), "-m", "llama_cpp.server", "--model", str(weights), "--model_alias", MODEL]
    args += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    # OMP_WAIT_POLICY=passive: on two cores, spinning OpenMP workers would slow each call tenfold.
    env = {"PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "passive"}
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    base = f"http://127.0.0.1:{port}/v1"
    with _process([*args, "--verbose", "false"], env, log, f"{base}/models", "the model server"):
        yield base


@dataclass
class Deployment:
    """wardgate (its URL, its database) in front of Open WebUI (its own URL, on loopback)."""

    front: str
    database: Path
    open_webui: str
    admin: dict[str, Any]  # Ada's wardgate session
    bob: dict[str, Any]  # Bob's account
    service_key: str

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.front}/wardgate{path}", headers=bearer(token), **kwargs)


@pytest.fixture(scope="module")
def deployment(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if not BINARY.exists():
        service_missing("Open WebUI", "run ./scripts/setup-openwebui (./scripts/test does)")
    data, owui_port, port = tmp_path_factory.mktemp("wardgate"), free_port(), free_port()
    env = {
        "DATA_DIR": str(data),
        "WEBUI_SECRET_KEY": SECRET,
        "PORT": str(port),
        "UPSTREAM_URL": f"http://127.0.0.1:{owui_port}",
        "WARDGATE_PATH_PREFIX": "/wardgate",
        "OPENAI_API_BASE_URL": model_server,
        "ENABLE_API_KEYS": "true",
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": JWT_SECRET,
        "SESSION_SYNC_INTERVAL": "0.2",
    }
    with wardgate_process(env, health="/wardgate/health") as wardgate:
        front = f"http://localhost:{port}"
        admin = _signed_up(wardgate, "Ada Lovelace", "ada@example.com")
        bob = httpx.post(
            f"{wardgate}/wardgate/api/v1/auths/add",
            json={"name": "Bob Moog", "email": "bob@example.com", "password": PASSWORD, "role": "user"},
            headers=bearer(admin["token"]),
        ).json()
        made = httpx.post(
            f"{wardgate}/wardgate/api/v1/auths/api_keys",
            json={"name": "open-webui", "acts_for_users": True, "upstreams": ["openai"]},
            headers=bearer(admin["token"]),
        )
        assert made.status_code == 200, made.text
        service_key = made.json()["api_key"]
        owui_data = tmp_path_factory.mktemp("open-webui")
        owui_env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(owui_data),
            "DATA_DIR": str(owui_data),
            "WEBUI_SECRET_KEY": "open-webui-test-secret-0123456789abcdef",
            "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": "X-Forwarded-Email",
            "WEBUI_AUTH_TRUSTED_NAME_HEADER": "X-Forwarded-Name",
            "DEFAULT_USER_ROLE": "user",
            # The README's deployment: the model connection is wardgate, with the service key, told
            # who each call is for (signed with the secret both sides share).
            "ENABLE_OPENAI_API": "true",
            "OPENAI_API_BASE_URL": f"{wardgate}/openai",
            "OPENAI_API_KEY": service_key,
            "ENABLE_FORWARD_USER_INFO_HEADERS": "true",
            "FORWARD_USER_INFO_HEADER_JWT_SECRET": JWT_SECRET,
            "BYPASS_MODEL_ACCESS_CONTROL": "true",
            "DEFAULT_MODELS": MODEL,
            # Background tasks would be calls of their own (charged to the person too); off, so that
            # each chat message is one call to compare.
            "ENABLE_TITLE_GENERATION": "false",
            "ENABLE_FOLLOW_UP_GENERATION": "false",
            "ENABLE_TAGS_GENERATION": "false",
            "ENABLE_AUTOCOMPLETE_GENERATION": "false",
            "OFFLINE_MODE": "true",
            "HF_HUB_OFFLINE": "1",
            "ENABLE_OLLAMA_API": "false",
            "ENABLE_VERSION_UPDATE_CHECK": "false",
            "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
        }
        args = [str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(owui_port)]
        owui = f"http://127.0.0.1:{owui_port}"
        with _process(args, owui_env, owui_data / "open-webui.log", f"{owui}/health", "Open WebUI"):
            yield Deployment(front, data / "wardgate.db", owui, admin, bob, service_key)


def _signed_up(base: str, name: str, email: str) -> dict[str, Any]:
    form = {"name": name, "email": email, "password": PASSWORD}
    answer = httpx.post(f"{base}/wardgate/api/v1/auths/signup", json=form, headers={"origin": base})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _open_chat(browser: Browser, d: Deployment, email: str) -> tuple[BrowserContext, Page, str]:
    """Sign in at wardgate, open Open WebUI, answer in whole (not streamed) with at most MAX_TOKENS;
    the page and the person's Open WebUI token."""
    context = new_context(browser, Console())
    page = context.new_page()
    page.goto(f"{d.front}/wardgate/auth")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(lambda url: "/wardgate/auth" not in url)
    page.goto(f"{d.front}/")
    expect(page.get_by_role("button", name="User menu")).to_be_visible(timeout=60_000)
    token: str = page.evaluate("localStorage.token")
    settings = {"ui": {"params": {"stream_response": False, "max_tokens": MAX_TOKENS, "temperature": 0}}}
    saved = httpx.post(
        f"{d.open_webui}/api/v1/users/user/settings/update", json=settings, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    page.reload()
    with contextlib.suppress(PlaywrightTimeoutError):  # Open WebUI's changelog greets a new account
        page.get_by_role("button", name="Okay, Let's Go!").click(timeout=8_000)
    return context, page, token


def _say(page: Page, text: str) -> None:
    box = page.locator("#chat-input")
    expect(box).to_be_visible(timeout=30_000)
    box.click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def _records(d: Deployment, count: int) -> list[dict[str, Any]]:
    """wardgate's usage records once `count` are written (in bulk, every 0.2 s here)."""
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(d.database) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM usage_records ORDER BY id")]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _owui_usage(d: Deployment, token: str) -> dict[str, tuple[int, int]]:
    """What Open WebUI stored of each chat's answers: chat id -> (prompt, completion) tokens, summed
    over its assistant messages (the model server's `usage`, as it reached Open WebUI)."""
    found: dict[str, tuple[int, int]] = {}
    for chat in httpx.get(f"{d.open_webui}/api/v1/chats/", headers=bearer(token)).json():
        full = httpx.get(f"{d.open_webui}/api/v1/chats/{chat['id']}", headers=bearer(token)).json()
        messages = full["chat"]["history"]["messages"].values()
        usages = [m["usage"] for m in messages if m.get("role") == "assistant" and m.get("usage")]
        found[chat["id"]] = (
            sum(u["prompt_tokens"] for u in usages),
            sum(u["completion_tokens"] for u in usages),
        )
    return found


def test_each_person_chats_through_one_service_key_and_is_metered_and_ruled_as_themselves(
    deployment: Deployment, browser: Browser
) -> None:
    d = deployment
    ada_context, ada, ada_token = _open_chat(browser, d, "ada@example.com")
    # Open WebUI lists the models it is told to (so that Bob can pick the one he may not use):
    # its connection settings, set on Open WebUI itself (wardgate's /openai is the model relay).
    config = {
        "ENABLE_OPENAI_API": True,
        "OPENAI_API_BASE_URLS": [f"{_wardgate_url(d)}/openai"],
        "OPENAI_API_KEYS": [d.service_key],
        "OPENAI_API_CONFIGS": {"0": {"enable": True, "model_ids": [MODEL]}},
    }
    updated = httpx.post(f"{d.open_webui}/openai/config/update", json=config, headers=bearer(ada_token))
    assert updated.status_code == 200, updated.text
    bob_context, bob, bob_token = _open_chat(browser, d, "bob@example.com")

    _say(ada, "Say hello.")
    first = _records(d, 1)
    _say(bob, "Name a colour.")
    _say(ada, "Count to three.")
    records = _records(d, 3)
    shoot(ada, "open-webui-acting-ada")
    shoot(bob, "open-webui-acting-bob")

    # Every call is the person's, made with the service key, in that person's chat.
    service_key_id = first[0]["api_key_id"]
    people = {"ada@example.com": d.admin["id"], "bob@example.com": d.bob["id"]}
    assert [r["user_id"] for r in records] == [
        people["ada@example.com"],
        people["bob@example.com"],
        d.admin["id"],
    ]
    assert {r["api_key_id"] for r in records} == {service_key_id}
    assert all(r["status"] == 200 and r["metered"] and r["complete"] for r in records)
    # Exactly what the model server reported, as Open WebUI stored it in each person's chats.
    for token, person in ((ada_token, d.admin["id"]), (bob_token, d.bob["id"])):
        stored = _owui_usage(d, token)
        ours = {}
        for r in records:
            if r["user_id"] == person:
                prompt, completion = ours.get(r["chat_id"], (0, 0))
                ours[r["chat_id"]] = (prompt + r["prompt_tokens"], completion + r["completion_tokens"])
        assert ours == stored and stored, (ours, stored)
        print(f"{person}: Open WebUI stored {stored}; wardgate recorded {ours}")
        assert all(0 < completion <= 2 * MAX_TOKENS for _prompt, completion in stored.values())
    # GET /api/v1/usage: each person's tokens, separately.
    by_user = d.api("GET", "/api/v1/usage", d.admin["token"], params={"group_by": "user"}).json()
    totals = {row["key"]: row["total_tokens"] for row in by_user["groups"]}
    for person in people.values():
        mine = [r for r in records if r["user_id"] == person]
        assert totals[person] == sum(r["prompt_tokens"] + r["completion_tokens"] for r in mine)

    # A key without the flag names nobody: Bob's signed token with Ada's ordinary key is Ada's call.
    ordinary = d.api("POST", "/api/v1/auths/api_keys", d.admin["token"], json={"name": "script"}).json()
    forged = {
        "X-OpenWebUI-User-Jwt": _owui_token("bob@example.com"),
        "X-OpenWebUI-User-Email": "bob@example.com",
    }
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}
    direct = httpx.post(
        f"{d.front}/openai/chat/completions", json=body, headers={**bearer(ordinary["api_key"]), **forged}
    )
    assert direct.status_code == 200, direct.text
    # ... and Bob's own session naming Ada is Bob's call.
    own = httpx.post(
        f"{d.front}/openai/chat/completions",
        json=body,
        headers={**bearer(_signed_in(d, "bob@example.com")), "X-OpenWebUI-User-Email": "ada@example.com"},
    )
    assert own.status_code == 200, own.text
    *_, by_key, by_session = _records(d, 5)
    assert (by_key["user_id"], by_key["api_key_id"], by_key["chat_id"]) == (
        d.admin["id"],
        ordinary["id"],
        None,
    )
    assert (by_session["user_id"], by_session["api_key_id"]) == (d.bob["id"], None)
    assert by_key["prompt_tokens"] == direct.json()["usage"]["prompt_tokens"]

    # Bob, now limited to another model, reads wardgate's refusal in his chat.
    limited = d.api(
        "POST", f"/api/v1/users/{d.bob['id']}/update", d.admin["token"], json={"allowed_models": ["llama3*"]}
    )
    assert limited.status_code == 200, limited.text
    _say(bob, "And another colour?")
    in_bobs_chat = bob.locator("#messages-container").get_by_text(f"You may not use the model {MODEL}.")
    expect(in_bobs_chat).to_be_visible(timeout=30_000)
    shoot(bob, "open-webui-acting-model-refused")
    # Ada, over her budget, reads hers.
    budget = {"token_budget": {"tokens": 1, "period": "1d"}}
    assert (
        d.api("POST", f"/api/v1/users/{d.admin['id']}/update", d.admin["token"], json=budget).status_code
        == 200
    )
    # A budget counts the calls made while it applies: this one is let through (1 token left) and
    # uses it up; the next is refused.
    _say(ada, "Count to four.")
    assert len(_records(d, 6)) == 6
    _say(ada, "Count to five.")
    in_adas_chat = ada.locator("#messages-container").get_by_text("The token budget of your account")
    expect(in_adas_chat).to_be_visible(timeout=30_000)
    shoot(ada, "open-webui-acting-budget-refused")
    time.sleep(1)  # five batched writes' time
    assert len(_records(d, 0)) == 6  # neither refusal reached the model server, nor was recorded
    ada_context.close()
    bob_context.close()


def _wardgate_url(d: Deployment) -> str:
    """wardgate's own address as Open WebUI's server reaches it (loopback)."""
    return d.front.replace("localhost", "127.0.0.1")


def _signed_in(d: Deployment, email: str) -> str:
    answer = httpx.post(
        f"{d.front}/wardgate/api/v1/auths/signin",
        json={"email": email, "password": PASSWORD},
        headers={"origin": d.front},
    )
    token: str = answer.json()["token"]
    return token


def _owui_token(email: str) -> str:
    now = int(time.time())
    claims = {
        "sub": "x",
        "email": email,
        "name": "X",
        "role": "user",
        "iss": "open-webui",
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")
