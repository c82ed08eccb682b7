"""Issue 19: a service key made by an admin acts for the person Open WebUI's server names, with that
person's model rules, budget and usage; the forwarded headers mean nothing from anyone else.

In process (wardgate's TestClient in front of the fake model server in a thread): each refusal is
checked for its `detail`, for nothing reaching the model server and for nothing recorded on the key.
The real Open WebUI and a real model are tests/openwebui/test_acting_for_people.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.acting.conftest import JWT_SECRET, Site, make_site, owui_token, upstream_saw
from tests.conftest import PASSWORD, bearer, refused

MakeClient = Callable[..., TestClient]
FORWARDED = ("x-openwebui-user-jwt", "x-openwebui-user-email", "x-openwebui-user-id", "x-openwebui-chat-id")


@pytest.fixture
def site(make_client: MakeClient, tmp_path: Path, model_server: str) -> Site:
    """Signed form: FORWARD_USER_INFO_HEADER_JWT_SECRET set."""
    return make_site(make_client, tmp_path, model_server, FORWARD_USER_INFO_HEADER_JWT_SECRET=JWT_SECRET)


@pytest.fixture
def plain_site(make_client: MakeClient, tmp_path: Path, model_server: str) -> Site:
    """Plain form: no secret configured."""
    return make_site(make_client, tmp_path, model_server)


def _nothing_forwarded_nor_recorded(site: Site) -> None:
    assert upstream_saw() == []
    assert site.records() == []


# --- the flag ------------------------------------------------------------------------------------


def test_only_an_admin_makes_a_service_key_and_only_for_the_model_servers(site: Site) -> None:
    assert site.service_key["acts_for_users"] is True
    bob = site.client.post(
        "/api/v1/auths/signin", json={"email": "bob@example.com", "password": PASSWORD}
    ).json()
    site.client.cookies.clear()
    denied = site.key(bob["token"], acts_for_users=True)
    assert (
        refused(denied, 403) == "Only administrators may create a key that acts for people (acts_for_users)."
    )
    assert site.key(bob["token"]).json()["acts_for_users"] is False  # an ordinary key is still his to make
    assert site.key(site.admin["token"], acts_for_user=True).status_code == 422  # a misspelt field is refused
    wide = site.key(site.admin["token"], acts_for_users=True, upstreams=["openai", "app"])
    assert "model servers" in refused(wide, 400)
    listed = site.client.get("/api/v1/auths/api_keys", headers=bearer(site.admin["token"])).json()
    assert [k["acts_for_users"] for k in listed] == [True]


def test_a_service_key_reaches_neither_the_app_nor_anything_without_a_person(site: Site) -> None:
    key = site.service_key["api_key"]
    as_bob = site.as_person("bob@example.com")
    app = site.client.get("/api/chats", headers={**bearer(key), **as_bob})
    assert refused(app, 403) == "A service key acts on the model servers only."
    for answer in (site.chat(key), site.client.get("/openai/models", headers=bearer(key))):
        assert "the request names nobody" in refused(answer, 403)
    _nothing_forwarded_nor_recorded(site)


# --- acting for a person -------------------------------------------------------------------------


def test_the_call_is_the_persons_usage_with_the_key_and_the_chat(site: Site) -> None:
    answer = site.chat(site.service_key["api_key"], site.as_person("Bob@Example.com"))
    assert answer.status_code == 200, answer.text
    bob = site.people["bob@example.com"]
    assert site.records() == [
        {
            "user_id": bob["id"],
            "api_key_id": site.service_key["id"],
            "chat_id": "chat-1",
            "model": "gpt-4o-mini",
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "status": 200,
        }
    ]
    (seen,) = upstream_saw()
    assert seen["headers"]["x-forwarded-email"] == "bob@example.com"  # the upstream is told the person
    assert not set(FORWARDED) & set(seen["headers"])  # and not Open WebUI's headers
    report = site.client.get(
        "/api/v1/usage", params={"user_id": bob["id"]}, headers=bearer(site.admin["token"])
    ).json()
    assert report["totals"]["total_tokens"] == 7
    admins_own = site.client.get("/api/v1/usage", headers=bearer(site.admin["token"])).json()
    assert admins_own["totals"]["requests"] == 0  # the key's owner is charged nothing


def test_the_persons_model_rules_apply_to_calls_and_lists(site: Site) -> None:
    site.update("bob@example.com", allowed_models=["llama3*"])
    key, as_bob = site.service_key["api_key"], site.as_person("bob@example.com")
    assert refused(site.chat(key, as_bob), 403) == "You may not use the model gpt-4o-mini."
    assert upstream_saw() == []
    listed = site.client.get("/openai/models", headers={**bearer(key), **as_bob}).json()
    assert {m["id"] for m in listed["data"]} == {"llama3:latest", "llama3.1:8b"}
    as_carol = site.as_person("carol@example.com")
    assert site.chat(key, as_carol).status_code == 200  # Carol has no such rule


def test_the_persons_budget_applies(site: Site) -> None:
    site.update("bob@example.com", token_budget={"tokens": 5, "period": "1d"})
    key, as_bob = site.service_key["api_key"], site.as_person("bob@example.com")
    assert site.chat(key, as_bob).status_code == 200  # 7 tokens: the budget is now used up
    over = site.chat(key, as_bob)
    assert "The token budget of your account (5 tokens a day) is used up" in refused(over, 429)
    assert site.chat(key, site.as_person("carol@example.com")).status_code == 200
    assert [r["user_id"] for r in site.records()] == [
        site.people[e]["id"] for e in ("bob@example.com", "carol@example.com")
    ]


def test_a_changed_email_names_the_person_by_the_new_address(site: Site) -> None:
    site.update("bob@example.com", email="robert@example.com")
    key = site.service_key["api_key"]
    assert "bob@example.com has no account" in refused(site.chat(key, site.as_person("bob@example.com")), 403)
    assert site.chat(key, site.as_person("robert@example.com")).status_code == 200
    assert site.records()[0]["user_id"] == site.people["bob@example.com"]["id"]


@pytest.mark.parametrize(
    ("who", "detail"),
    [
        ("nobody@example.com", "nobody@example.com has no account at wardgate"),
        ("pat@example.com", "Your account is pending approval by an administrator."),
        ("carol@example.com", "The account of carol@example.com is disabled."),
    ],
)
def test_a_person_who_may_not_use_wardgate_is_refused_and_nothing_lands_on_the_key(
    site: Site, who: str, detail: str
) -> None:
    site.update("carol@example.com", active=False)
    answer = site.chat(site.service_key["api_key"], site.as_person(who))
    assert detail in refused(answer, 403)
    _nothing_forwarded_nor_recorded(site)
    with sqlite3.connect(site.data_dir / "wardgate.db") as db:  # the audit names who was asked for
        details = [
            row[0] for row in db.execute("SELECT detail FROM audit_events WHERE event = 'api_key.refused'")
        ]
    assert details == [f"key={site.service_key['id']} reason=service_key_person person={who}"]


def test_a_websocket_with_a_service_key_is_refused_and_audited(site: Site) -> None:
    """A socket names nobody, so a service key opens none; the refusal is audited as a call's is."""
    key = site.service_key["api_key"]
    for _ in range(2):  # audited once a minute per key and reason
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            site.client.websocket_connect("/ollama/api/ws", headers=bearer(key)),
        ):
            pass
        assert closed.value.code == 1008
    _nothing_forwarded_nor_recorded(site)
    with sqlite3.connect(site.data_dir / "wardgate.db") as db:
        details = [
            row[0] for row in db.execute("SELECT detail FROM audit_events WHERE event = 'api_key.refused'")
        ]
    assert details == [f"key={site.service_key['id']} reason=service_key_person"]


def test_the_owner_demoted_the_key_acts_for_nobody(site: Site) -> None:
    other = site.client.post(
        "/api/v1/auths/add",
        json={
            "name": "Eve",
            "email": "eve@example.com",
            "password": PASSWORD,
            "role": "admin",
        },
        headers=bearer(site.admin["token"]),
    ).json()
    eve = site.client.post(
        "/api/v1/auths/signin", json={"email": "eve@example.com", "password": PASSWORD}
    ).json()
    site.client.cookies.clear()
    key = site.key(eve["token"], acts_for_users=True).json()["api_key"]
    demote = site.client.post(
        f"/api/v1/users/{other['id']}/update", json={"role": "user"}, headers=bearer(site.admin["token"])
    )
    assert demote.status_code == 200
    # USER_PERMISSIONS_FEATURES_API_KEYS lets users hold keys: the key lives on, but acts for nobody
    assert "no longer an administrator" in refused(site.chat(key, site.as_person("bob@example.com")), 403)
    _nothing_forwarded_nor_recorded(site)


# --- the signed form -----------------------------------------------------------------------------


def _none_token(email: str) -> str:
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    claims = jwt.decode(owui_token(email), options={"verify_signature": False})
    body = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    return f"{header}.{body}."


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (
            lambda: owui_token("bob@example.com", secret="another-secret-of-32-bytes-at-least"),
            "is not signed with",
        ),
        (lambda: _none_token("bob@example.com"), "must be signed with HS256"),
        (lambda: owui_token("bob@example.com", algorithm="HS512"), "must be signed with HS256"),
        (lambda: owui_token("bob@example.com", iss="not-open-webui"), "was not issued by Open WebUI"),
        (lambda: owui_token("bob@example.com", iss=None), "lacks the 'iss' claim"),
        (lambda: owui_token("bob@example.com", iat=1_000_000, exp=1_000_060), "has expired"),
        (lambda: owui_token("bob@example.com", exp=None), "lacks the 'exp' claim"),
        (lambda: owui_token("bob@example.com", email=None), "lacks the 'email' claim"),
        (lambda: "garbage", "cannot be read as a token"),
        (lambda: "x" * 5000, "too long"),
    ],
    ids=[
        "wrong-secret",
        "alg-none",
        "hs512",
        "wrong-iss",
        "no-iss",
        "expired",
        "no-exp",
        "no-email",
        "garbage",
        "long",
    ],
)
def test_a_token_that_does_not_verify_is_refused_saying_why(
    site: Site, token: Callable[[], str], detail: str
) -> None:
    answer = site.chat(site.service_key["api_key"], {"X-OpenWebUI-User-Jwt": token()})
    assert detail in refused(answer, 403)
    _nothing_forwarded_nor_recorded(site)


def test_with_a_secret_the_plain_headers_name_nobody(site: Site) -> None:
    plain = {
        "X-OpenWebUI-User-Email": "bob@example.com",
        "X-OpenWebUI-User-Id": "x",
        "X-OpenWebUI-User-Role": "admin",
    }
    assert "only the signed X-OpenWebUI-User-Jwt names a person" in refused(
        site.chat(site.service_key["api_key"], plain), 403
    )
    _nothing_forwarded_nor_recorded(site)


def test_without_a_secret_the_plain_headers_name_the_person_and_a_token_is_refused(plain_site: Site) -> None:
    key = plain_site.service_key["api_key"]
    unverifiable = plain_site.chat(key, {"X-OpenWebUI-User-Jwt": owui_token("bob@example.com")})
    assert "FORWARD_USER_INFO_HEADER_JWT_SECRET is not set here" in refused(unverifiable, 403)
    plain = {"X-OpenWebUI-User-Email": "carol@example.com", "X-OpenWebUI-User-Role": "admin"}
    assert plain_site.chat(key, plain).status_code == 200
    (record,) = plain_site.records()
    assert record["user_id"] == plain_site.people["carol@example.com"]["id"]
    assert record["chat_id"] is None


# --- forged headers from anyone else --------------------------------------------------------------


def test_forged_headers_from_a_persons_own_key_or_session_are_stripped_and_ignored(site: Site) -> None:
    carol = site.client.post(
        "/api/v1/auths/signin", json={"email": "carol@example.com", "password": PASSWORD}
    ).json()
    site.client.cookies.clear()
    own_key = site.key(carol["token"]).json()["api_key"]
    admin_key = site.key(site.admin["token"], name="ordinary").json()["api_key"]
    forged = {
        **site.as_person("bob@example.com"),  # even correctly signed
        "X-OpenWebUI-User-Email": "bob@example.com",
        "X-OpenWebUI-User-Id": "bob",
        "X_OpenWebUI_User_Email": "bob@example.com",
    }
    for credential in (own_key, carol["token"], admin_key):
        assert site.chat(credential, forged).status_code == 200
    carol_id, admin_id = site.people["carol@example.com"]["id"], site.admin["id"]
    assert [(r["user_id"], r["chat_id"]) for r in site.records()] == [
        (carol_id, None),
        (carol_id, None),
        (admin_id, None),
    ]
    for seen in upstream_saw():
        headers = seen["headers"]
        assert not {name for name in headers if "openwebui" in name.replace("_", "").replace("-", "")}
    assert [seen["headers"]["x-forwarded-email"] for seen in upstream_saw()] == [
        "carol@example.com",
        "carol@example.com",
        "admin@example.com",
    ]


def test_a_service_key_never_manages_the_model_servers_even_for_an_admin(plain_site: Site) -> None:
    """Open WebUI's server uses and lists models; naming an admin must not lend it their power."""
    key = plain_site.service_key["api_key"]
    as_admin = {**bearer(key), "X-OpenWebUI-User-Email": "admin@example.com"}
    for method, path in (
        ("DELETE", "/ollama/api/delete"),
        ("POST", "/ollama/api/pull"),
        ("GET", "/openai/files"),
    ):
        answer = plain_site.client.request(method, path, json={"model": "llama3"}, headers=as_admin)
        assert answer.status_code == 403, (method, path, answer.text)
    assert upstream_saw() == []


def test_a_person_who_must_enrol_a_second_factor_is_not_acted_for(
    make_client: MakeClient, tmp_path: Path, model_server: str
) -> None:
    site = make_site(
        make_client,
        tmp_path,
        model_server,
        FORWARD_USER_INFO_HEADER_JWT_SECRET=JWT_SECRET,
        MFA_REQUIRED_ROLES="user",
    )
    acted = site.chat(site.service_key["api_key"], site.as_person("bob@example.com"))
    assert acted.status_code == 403 and "second factor" in acted.json()["detail"]
    _nothing_forwarded_nor_recorded(site)


@pytest.mark.parametrize(
    "address", ["bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "\u212aob@example.com"]
)
def test_a_look_alike_address_names_nobody(site: Site, address: str) -> None:
    """Full-width letters and the Kelvin sign fold to ASCII in IDNA and str.lower(): matched
    exactly, they name no account (as single sign-on matches addresses)."""
    answer = site.chat(site.service_key["api_key"], {"X-OpenWebUI-User-Jwt": owui_token(address)})
    assert answer.status_code == 403
    _nothing_forwarded_nor_recorded(site)


def test_a_forwarded_token_for_years_is_refused(site: Site) -> None:
    years = owui_token("bob@example.com", exp=2_000_000_000)
    assert site.chat(site.service_key["api_key"], {"X-OpenWebUI-User-Jwt": years}).status_code == 403
    no_iat = owui_token("bob@example.com", iat=None)
    assert site.chat(site.service_key["api_key"], {"X-OpenWebUI-User-Jwt": no_iat}).status_code == 403
    _nothing_forwarded_nor_recorded(site)


# --- rate limits ---------------------------------------------------------------------------------


def test_the_key_rate_limit_counts_each_person_on_their_own(
    make_client: MakeClient, tmp_path: Path, model_server: str
) -> None:
    """`API_KEY_RATE_LIMIT` counted every person's calls through Open WebUI together under its one
    key: one busy person got everyone else behind it refused."""
    site = make_site(
        make_client,
        tmp_path,
        model_server,
        FORWARD_USER_INFO_HEADER_JWT_SECRET=JWT_SECRET,
        API_KEY_RATE_LIMIT="2/1m",
    )
    key, as_bob, as_carol = (
        site.service_key["api_key"],
        site.as_person("bob@example.com"),
        site.as_person("carol@example.com"),
    )
    assert [site.chat(key, as_bob).status_code for _ in range(2)] == [200, 200]
    over = refused(site.chat(key, as_bob), 429)
    assert over.startswith("Rate limit exceeded for the calls of bob@example.com through this service key.")
    assert [site.chat(key, as_carol).status_code for _ in range(2)] == [200, 200]  # Bob's calls are not hers
    assert refused(site.chat(key, as_carol), 429).startswith("Rate limit exceeded for the calls of carol@")


def test_a_service_keys_own_rate_limit_caps_all_its_calls_together(site: Site) -> None:
    """Its maker's cap on what Open WebUI's server may send, whoever each call is for."""
    made = site.key(site.admin["token"], acts_for_users=True, rate_limit="3/1m")
    assert made.status_code == 200, made.text
    key = made.json()["api_key"]
    calls = [
        site.chat(key, site.as_person(who))
        for who in ("bob@example.com", "carol@example.com", "bob@example.com")
    ]
    assert [answer.status_code for answer in calls] == [200, 200, 200]
    assert refused(site.chat(key, site.as_person("carol@example.com")), 429).startswith(
        "Rate limit exceeded for this API key."
    )
