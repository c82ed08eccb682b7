"""Directory sign-in against a real OpenLDAP slapd (LDAPS from a throwaway CA): Open WebUI's route and
variables, with its flaws refused — empty passwords, filter injection, unverified TLS, takeover of a
local account by address, a silent local fall-back when the directory is down."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, refused, signup
from tests.ldap.server import Directory
from tests.mfa.conftest import MFA, gateway_of, totp_code
from tests.servers import free_port
from wardgate.config import load_settings
from wardgate.config.review import production_findings
from wardgate.errors import ConfigError
from wardgate.ldap import directory
from wardgate.ldap.directory import tls_context
from wardgate.storage.models import AuditEvent, OAuthIdentity

pytestmark = pytest.mark.slow
LDAP = "/api/v1/auths/ldap"
MakeClient = Callable[..., TestClient]


def ldap(client: TestClient, user: str, password: str) -> Any:
    response = client.post(LDAP, json={"user": user, "password": password})
    client.cookies.clear()
    return response


def test_a_person_signs_in_and_the_first_becomes_admin(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env())
    answer = ldap(client, "alice", "alice-password")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["email"], body["name"], body["role"]) == ("alice@example.org", "Alice Directory", "admin")
    assert "token=" in answer.headers["set-cookie"]
    second = ldap(client, "bob", "bob-password").json()
    assert second["role"] == "pending"  # DEFAULT_USER_ROLE
    again = ldap(client, "ALICE", "alice-password").json()  # the same entry, the same account
    assert again["id"] == body["id"]
    sessions = client.get("/api/v1/auths/sessions", headers=bearer(again["token"])).json()
    assert {s["auth_method"] for s in sessions} == {"ldap"}
    assert client.get("/api/config").json()["features"]["enable_ldap"] is True


def test_wrong_unknown_and_empty_passwords_read_the_same(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env())
    wrong = refused(ldap(client, "alice", "not-her-password"), 400)
    assert refused(ldap(client, "nobody", "whatever"), 400) == wrong  # no account enumeration
    assert refused(ldap(client, "alice", ""), 400) == wrong  # an unauthenticated bind never passes
    assert refused(ldap(client, "", "alice-password"), 400) == wrong


@pytest.mark.parametrize("name", ["*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice\\2a", "star*"])
def test_the_name_is_escaped_into_the_filter(make_client: MakeClient, slapd: Directory, name: str) -> None:
    client = make_client(**slapd.env())
    refused(ldap(client, name, "alice-password"), 400)


def test_two_entries_for_one_name_are_refused(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env(LDAP_SEARCH_FILTERS="(objectClass=person)"))
    refused(ldap(client, "twin", "twin-password"), 400)


def test_groups_are_mapped_like_single_sign_on_groups(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env(ENABLE_LDAP_GROUP_MANAGEMENT="true"))
    alice = ldap(client, "alice", "alice-password").json()
    bob = ldap(client, "bob", "bob-password").json()
    view = gateway_of(client).registry.view.users
    assert view[alice["id"]].groups == ("ai-users",)
    assert view[bob["id"]].groups == ("eng,admins",)  # an escaped comma stays in the name


def test_tls_is_verified_and_a_down_directory_is_a_503(make_client: MakeClient, slapd: Directory) -> None:
    wrong_ca = make_client(**slapd.env(LDAP_CA_CERT_FILE=str(slapd.other_ca_file)))
    assert "directory" in refused(ldap(wrong_ca, "alice", "alice-password"), 503)
    down = make_client(**slapd.env(LDAP_SERVER_PORT=str(free_port())))
    refused(ldap(down, "alice", "alice-password"), 503)
    unchecked = make_client(
        **slapd.env(LDAP_CA_CERT_FILE=str(slapd.other_ca_file), LDAP_VALIDATE_CERT="false")
    )
    assert ldap(unchecked, "alice", "alice-password").status_code == 200
    plain = make_client(**slapd.env(LDAP_USE_TLS="false", LDAP_SERVER_PORT=str(slapd.ldap_port)))
    assert ldap(plain, "bob", "bob-password").status_code == 200


def test_no_local_fallback_when_the_directory_is_down(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env())
    alice = ldap(client, "alice", "alice-password").json()
    down = make_client(**slapd.env(LDAP_SERVER_PORT=str(free_port())))
    refused(ldap(down, "alice", "alice-password"), 503)
    refused(
        down.post("/api/v1/auths/signin", json={"email": alice["email"], "password": "alice-password"}), 400
    )


def test_a_local_account_with_the_address_is_never_taken_over(
    make_client: MakeClient, slapd: Directory
) -> None:
    client = make_client(**slapd.env())
    signup(client, "alice@example.org")  # the local admin, with its own password
    assert "already exists" in refused(ldap(client, "alice", "alice-password"), 403)


def test_the_same_limits_audit_and_second_factors(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env(SIGNIN_RATE_LIMIT="3/3m"))
    token = ldap(client, "alice", "alice-password").json()["token"]
    secret = client.post(f"{MFA}/totp/setup", headers=bearer(token)).json()["secret"]
    client.post(f"{MFA}/totp/enable", json={"code": pyotp.TOTP(secret).now()}, headers=bearer(token))
    pending = ldap(client, "alice", "alice-password").json()
    assert pending["mfa_required"] is True and "token" not in pending
    done = client.post(
        f"{MFA}/verify", json={"mfa_token": pending["mfa_token"], "code": totp_code(secret, steps_ahead=1)}
    )
    assert done.status_code == 200
    for _ in range(3):
        refused(ldap(client, "bob", "wrong"), 400)
    refused(ldap(client, "bob", "bob-password"), 429)  # even the right password waits
    with gateway_of(client).sessions() as db:
        details = set(db.scalars(select(AuditEvent.detail).where(AuditEvent.event == "auth.signin")))
    assert "ldap" in details


def test_concurrent_first_sign_ins_make_one_admin(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env())
    results: dict[str, Any] = {}

    def sign(user: str, password: str) -> None:
        results[user] = client.post(LDAP, json={"user": user, "password": password}).json()

    threads = [
        threading.Thread(target=sign, args=a) for a in (("alice", "alice-password"), ("bob", "bob-password"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["role"] for r in results.values()) == ["admin", "pending"]


def test_the_directory_form_on_the_sign_in_page(make_client: MakeClient, slapd: Directory) -> None:
    client = make_client(**slapd.env(LDAP_SERVER_LABEL="Example Directory"))
    page = client.get("/auth")
    assert "Sign in with Example Directory" in page.text
    answer = client.post(
        "/auth/ldap", data={"user": "bob", "password": "bob-password"}, follow_redirects=False
    )
    assert answer.status_code == 303 and "token=" in answer.headers["set-cookie"]
    wrong = client.post("/auth/ldap", data={"user": "bob", "password": "nope"})
    assert wrong.status_code == 400 and 'value="bob"' in wrong.text and "nope" not in wrong.text


def test_off_unless_enabled(client: TestClient) -> None:
    refused(ldap(client, "alice", PASSWORD), 400)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENABLE_LDAP": "true"}, "LDAP_SEARCH_BASE"),
        ({"LDAP_ATTRIBUTE_FOR_MAIL": "mail)(x"}, "LDAP attribute"),
        ({"LDAP_SEARCH_FILTERS": "objectClass=person"}, "parenthesised"),
        ({"LDAP_SERVER_HOST": "ldaps://dir.example.com"}, "host name"),
        ({"LDAP_APP_DN": "cn=app,dc=example,dc=org"}, "LDAP_APP_PASSWORD"),
    ],
)
def test_bad_directory_settings_stop_start_up(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"DATA_DIR": str(tmp_path), **env})


def test_the_production_review_flags_plain_or_unchecked_tls(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path), "ENABLE_LDAP": "true", "LDAP_SEARCH_BASE": "dc=x"}
    assert any(
        "LDAP_USE_TLS" in f for f in production_findings(load_settings({**base, "LDAP_USE_TLS": "false"}))
    )
    unchecked = load_settings({**base, "LDAP_VALIDATE_CERT": "false"})
    assert any("LDAP_VALIDATE_CERT" in f for f in production_findings(unchecked))


@pytest.mark.parametrize("password", ["pass\tword", "\u00ad", "\u0627a", "nul\x00byte"])
def test_passwords_ldap_cannot_hold_are_refused_not_a_server_error(
    make_client: MakeClient, slapd: Directory, password: str
) -> None:
    client = make_client(**slapd.env())
    refused(ldap(client, "alice", password), 400)
    assert ldap(client, "alice", "alice-password").status_code == 200


def test_the_accounts_survive_a_move_to_another_address(make_client: MakeClient, slapd: Directory) -> None:
    before = make_client(**slapd.env(LDAP_USE_TLS="false", LDAP_SERVER_PORT=str(slapd.ldap_port)))
    first = ldap(before, "bob", "bob-password").json()["id"]
    after = make_client(**slapd.env(LDAP_SERVER_HOST="localhost"))  # now LDAPS, by name
    assert ldap(after, "bob", "bob-password").json()["id"] == first


def test_a_directory_address_is_no_proof_for_merging_a_provider_sign_in(
    make_client: MakeClient, slapd: Directory
) -> None:
    client = make_client(**slapd.env())
    ldap(client, "alice", "alice-password")
    with gateway_of(client).sessions() as db:
        proofs = list(
            db.scalars(select(OAuthIdentity.email_verified).where(OAuthIdentity.provider == "ldap"))
        )
    assert proofs == [False]


def test_concurrent_guesses_from_one_address_stop_at_the_limit(
    make_client: MakeClient, slapd: Directory
) -> None:
    client = make_client(**slapd.env(SIGNIN_IP_RATE_LIMIT="3/3m"))
    statuses: list[int] = []

    def guess(i: int) -> None:
        statuses.append(client.post(LDAP, json={"user": f"nobody{i}", "password": "x"}).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(400) <= 3 and set(statuses) <= {400, 429}


def test_no_cipher_list_can_skip_the_certificate() -> None:
    context = tls_context(True, None, "ALL:@SECLEVEL=0")
    assert not any("ADH" in c["name"] or "AECDH" in c["name"] for c in context.get_ciphers())


def test_a_directory_that_trickles_is_cut_off(
    make_client: MakeClient, slapd: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts, then sends an LDAP answer a byte at a time (each read within
    ldap3's timeout), is cut off by the sign-in's deadline: 503, the worker thread free again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            with peer:
                try:
                    peer.sendall(b"\x30\x84\x00\x00\x10\x00")  # a long answer begins
                    while not stop.wait(0.5):
                        peer.sendall(b"\x02")
                except OSError:
                    continue

    threading.Thread(target=trickle, daemon=True).start()
    monkeypatch.setattr(directory, "DEADLINE", 2.0)
    port = listener.getsockname()[1]
    client = make_client(**slapd.env(LDAP_USE_TLS="false", LDAP_SERVER_PORT=str(port)))
    started = time.monotonic()
    try:
        refused(ldap(client, "alice", "alice-password"), 503)
        assert time.monotonic() - started < 8
    finally:
        stop.set()
        listener.close()
