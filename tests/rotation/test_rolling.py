"""Three real instances rotate WEBUI_SECRET_KEY one restart at a time, exactly as the README's runbook
says, while clients keep calling every instance: not one 401 for a valid session or API key; then a
token signed with the dropped secret is refused everywhere.

The runbook (README, "Rotating the secret key"): pass 1 restarts each instance with
`WEBUI_SECRET_KEY=OLD, WEBUI_SECRET_KEY_FALLBACKS=NEW` (accept), pass 2 with `NEW` / `OLD` (sign), and
pass 3 — once `JWT_EXPIRES_IN` has passed since pass 2 and `wardgate check --keys` shows no API key
left under `OLD` — with `NEW` alone (drop). The clients sign in again on each instance after every
restart, so that tokens and keys made by rotated instances reach instances not yet rotated.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import PASSWORD, REDIS_URL, postgres_database
from tests.scaleout.harness import Instance, start_together, wait_for
from tests.servers import fake_upstream_process
from wardgate.security.keys import key_id

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

OLD, NEW = "rotation-old-secret-" * 3, "rotation-new-secret-" * 3
LIFETIME = 20  # seconds: JWT_EXPIRES_IN, short so that pass 3 can wait for it
PASSES = (
    {"WEBUI_SECRET_KEY": OLD, "WEBUI_SECRET_KEY_FALLBACKS": NEW},  # 1: accept NEW
    {"WEBUI_SECRET_KEY": NEW, "WEBUI_SECRET_KEY_FALLBACKS": OLD},  # 2: sign with NEW
    {"WEBUI_SECRET_KEY": NEW},  # 3: drop OLD
)
_ips = (f"198.19.{n // 250}.{n % 250 + 1}" for n in itertools.count())


@dataclass
class Traffic:
    """What the client threads saw: every status per kind of credential, and each wrong refusal."""

    sessions: list[str] = field(default_factory=list)  # tokens in use (each valid until its `exp`)
    keys: list[str] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def note(self, what: str, response: httpx.Response, credential: str) -> None:
        with self.lock:
            self.seen[f"{what} {response.status_code}"] += 1
            if response.status_code != 200 and not expired_soon(credential):
                self.wrong.append(f"{what} {response.status_code} {response.text[:120]}")


def expired_soon(credential: str) -> bool:
    """A session token within a second of its `exp` (a 401 then is the clock's, not the rotation's)."""
    if credential.startswith("sk-"):
        return False
    exp = jwt.decode(credential, options={"verify_signature": False})["exp"]
    return bool(exp - 1 <= time.time())


def headers(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "X-Forwarded-For": next(_ips)}


def keep_calling(instance: Instance, traffic: Traffic) -> None:
    """One client per instance: the newest credentials first, then any, as fast as it answers."""
    with httpx.Client(base_url=instance.url, timeout=5) as client:
        while not traffic.stop.is_set():
            with traffic.lock:
                pairs = [("session", t) for t in traffic.sessions[-6:]] + [("key", k) for k in traffic.keys]
            for what, credential in random.sample(pairs, len(pairs)):
                path = "/api/v1/auths/" if what == "session" else "/ollama/api/version"
                try:
                    response = client.get(path, headers=headers(credential))
                except httpx.TransportError:
                    continue  # the instance is restarting: no answer is not a refusal
                traffic.note(what, response, credential)
            time.sleep(0.01)


def sign_in(instance: Instance, email: str) -> str:
    response = httpx.post(
        f"{instance.url}/api/v1/auths/signin",
        json={"email": email, "password": PASSWORD},
        headers={"X-Forwarded-For": next(_ips)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def new_key(instance: Instance, token: str) -> str:
    response = httpx.post(
        f"{instance.url}/api/v1/auths/api_keys", json={"name": uuid.uuid4().hex[:8]}, headers=headers(token)
    )
    assert response.status_code == 200, response.text
    key: str = response.json()["api_key"]
    return key


def keys_under(env: dict[str, str]) -> int:
    """`wardgate check --keys` as the runbook runs it: the API keys still digested under OLD."""
    kid = key_id(OLD)
    result = subprocess.run(
        [sys.executable, "-m", "wardgate", "check", "--keys"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert OLD not in result.stdout + result.stderr and NEW not in result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"key {kid} ")]
    return int(line.split(": ", 1)[1].split(" API keys")[0])


@pytest.fixture
def upstream() -> Iterator[str]:
    with fake_upstream_process() as base:
        yield base


@pytest.fixture
def database() -> Iterator[str]:
    yield from postgres_database()


def test_three_instances_rotate_one_by_one_without_a_401(
    tmp_path: Path, upstream: str, database: str
) -> None:
    assert REDIS_URL is not None
    base = {
        "DATABASE_URL": database,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"wg-rotation-{uuid.uuid4().hex[:8]}:",
        "WEBUI_SECRET_KEY": OLD,
        "JWT_EXPIRES_IN": f"{LIFETIME}s",
        "SESSION_SYNC_INTERVAL": "1",
        "ENABLE_API_KEYS": "true",
        "OLLAMA_BASE_URL": upstream,
        "SIGNIN_RATE_LIMIT": "1000/1m",
        "SIGNIN_IP_RATE_LIMIT": "1000/1m",
        "API_KEY_RATE_LIMIT": "100000/1m",
    }
    instances = [Instance(name, dict(base), tmp_path / name) for name in ("A", "B", "C")]
    traffic = Traffic()
    clients = [threading.Thread(target=keep_calling, args=(i, traffic), daemon=True) for i in instances]
    try:
        start_together(instances)
        signup = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
        token = httpx.post(f"{instances[0].url}/api/v1/auths/signup", json=signup).json()["token"]
        traffic.sessions.append(token)
        traffic.keys.append(new_key(instances[0], token))  # made before the rotation, under OLD
        for client in clients:
            client.start()
        for number, values in enumerate(PASSES, 1):
            if number == 3:  # the runbook's conditions for dropping OLD
                time.sleep(LIFETIME + 1)  # every token an instance signed with OLD has expired
                wait_for(
                    lambda: keys_under({**base, **PASSES[1], "DATA_DIR": str(tmp_path / "check")}) == 0,
                    timeout=30,
                    interval=1,
                    what="no API key left under OLD",
                )
            for instance in instances:
                instance.stop()
                instance.env = {**base, **values}
                if "WEBUI_SECRET_KEY_FALLBACKS" not in values:
                    instance.env.pop("WEBUI_SECRET_KEY_FALLBACKS", None)
                start_together([instance])
                for other in instances:  # tokens signed by each instance's current secret, everywhere
                    with traffic.lock:
                        traffic.sessions.append(sign_in(other, "ada@example.com"))
                if number == 2:  # and a key a rotated instance digests under NEW
                    with traffic.lock:
                        traffic.keys.append(new_key(instance, traffic.sessions[-1]))
                time.sleep(2)  # several syncs and re-digest flushes of traffic on every instance
        time.sleep(2)
        traffic.stop.set()
        for client in clients:
            client.join(timeout=10)
        assert traffic.wrong == [], traffic.seen
        assert traffic.seen["session 200"] > 100 and traffic.seen["key 200"] > 100, traffic.seen

        fresh = sign_in(instances[1], "ada@example.com")
        claims = jwt.decode(fresh, options={"verify_signature": False})
        assert jwt.get_unverified_header(fresh)["kid"] == key_id(NEW)
        forged_old = jwt.encode(claims, OLD, algorithm="HS256", headers={"kid": key_id(OLD)})
        legacy_old = jwt.encode(claims, OLD, algorithm="HS256")  # no kid: tried against every key
        for instance in instances:
            assert httpx.get(f"{instance.url}/api/v1/auths/", headers=headers(fresh)).status_code == 200
            for refused in (forged_old, legacy_old):
                response = httpx.get(f"{instance.url}/api/v1/auths/", headers=headers(refused))
                assert response.status_code == 401, response.text
            for key in traffic.keys:  # made before the rotation and during it: still working
                assert (
                    httpx.get(f"{instance.url}/ollama/api/version", headers=headers(key)).status_code == 200
                )
    finally:
        traffic.stop.set()
        for instance in instances:
            instance.stop()
