"""Configuration: Open WebUI's names and parse rules, refused when invalid, secrets never shown."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from wardgate.config import Settings, load_settings, redacted_settings
from wardgate.config.loading import read_environment
from wardgate.config.review import production_findings
from wardgate.config.values import parse_duration
from wardgate.errors import ConfigError

SECRET = "a-very-secret-value-that-must-never-be-printed-0123456789"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("4w", 4 * 604800),
        ("1d12h", 129600),
        ("30m", 1800),
        ("1.5h", 5400),
        ("90s", 90),
        ("7d", 604800),
        ("1500ms", 1.5),
    ],
)
def test_durations_follow_open_webui(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["-1", "0"])
def test_minus_one_means_no_expiry(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["30", "1y", "abc", "4weeks", "-5m", "1h junk", "", "500ms"])
def test_invalid_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|second"):
        parse_duration(text)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET})
    assert s.jwt_expires_in == timedelta(days=7)
    assert s.default_user_role == "pending"
    assert s.enable_signup and s.enable_password_auth and s.enable_login_form
    assert s.webui_session_cookie_same_site == "lax" and s.auth_cookie_same_site == "lax"
    assert s.auth_cookie_secure is None  # Secure follows the request scheme
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'wardgate.db').resolve()}"
    assert (s.host, s.port) == ("127.0.0.1", 8080)


@pytest.mark.parametrize("value", ["true", "TRUE", "True", " true "])
def test_true_in_any_case(value: str, tmp_path: Path) -> None:
    s = load_settings(
        {"DATA_DIR": str(tmp_path), "ENABLE_SIGNUP": value, "WEBUI_SESSION_COOKIE_SECURE": value}
    )
    assert s.enable_signup is True and s.auth_cookie_secure is True


@pytest.mark.parametrize("value", ["1", "yes", "on", "maybe", "tru"])
def test_booleans_that_are_neither_true_nor_false_are_errors(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"ENABLE_SIGNUP='{value}': expected true or false"):
        load_settings({"DATA_DIR": str(tmp_path), "ENABLE_SIGNUP": value})


def test_every_problem_is_reported_at_once_with_secrets_redacted(tmp_path: Path) -> None:
    env = {
        "DATA_DIR": str(tmp_path),
        "WEBUI_SECRET_KEY": SECRET,
        "WEBUI_ADMIN_PASSWORD": SECRET,
        "ENABLE_SIGNUP": "maybe",
        "JWT_EXPIRES_IN": "1y",
        "DEFAULT_USER_ROLE": "root",
        "PORT": "http",
        "WEBUI_URL": "javascript:alert(1)",
        "WEBUI_SESSION_COOKIE_SAME_SITE": "sometimes",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    for name in (
        "ENABLE_SIGNUP",
        "JWT_EXPIRES_IN",
        "DEFAULT_USER_ROLE",
        "PORT",
        "WEBUI_URL",
        "WEBUI_SESSION_COOKIE_SAME_SITE",
    ):
        assert name in message
    # ...and the rule across variables that their refusal does not hide (password without email)
    assert "WEBUI_ADMIN_EMAIL / WEBUI_ADMIN_PASSWORD" in message
    assert len(caught.value.problems) == 7
    assert SECRET not in message
    assert "pending" in message and "duration" in message  # the accepted forms are named


def test_secret_values_are_redacted_when_a_secret_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": "   "})
    assert "WEBUI_SECRET_KEY" in str(caught.value) and "(redacted)" in str(caught.value)


def test_cross_field_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "DATA_DIR": str(tmp_path),
                "WEBUI_ADMIN_EMAIL": "a@example.com",
                "WEBUI_SESSION_COOKIE_SAME_SITE": "none",
                "WEBUI_AUTH": "false",
            }
        )
    text = str(caught.value)
    assert "WEBUI_ADMIN_PASSWORD" in text and "SameSite" in text and "WEBUI_AUTH" in text


def test_deprecated_jwt_secret_name_is_a_fallback(tmp_path: Path) -> None:
    old = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_JWT_SECRET_KEY": SECRET})
    assert old.secret_key == SECRET
    both = load_settings(
        {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": "x" * 40, "WEBUI_JWT_SECRET_KEY": SECRET}
    )
    assert both.secret_key == "x" * 40


def test_generated_secret_is_persisted_privately_and_reused(tmp_path: Path) -> None:
    first = load_settings({"DATA_DIR": str(tmp_path)})
    key_file = tmp_path / ".webui_secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.secret_key.encode()) >= 32
    assert first.secret_key_source == "file"
    assert load_settings({"DATA_DIR": str(tmp_path)}).secret_key == first.secret_key


def test_auth_cookie_falls_back_to_session_cookie(tmp_path: Path) -> None:
    s = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SESSION_COOKIE_SAME_SITE": "Strict",
            "WEBUI_SESSION_COOKIE_SECURE": "true",
        }
    )
    assert (s.auth_cookie_same_site, s.auth_cookie_secure) == ("strict", True)
    s = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SESSION_COOKIE_SECURE": "true",
            "WEBUI_AUTH_COOKIE_SECURE": "false",
            "WEBUI_AUTH_COOKIE_SAME_SITE": "lax",
        }
    )
    assert (s.auth_cookie_same_site, s.auth_cookie_secure) == ("lax", False)


def test_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WEBUI_NAME=From dotenv\nJWT_EXPIRES_IN=24h\n", encoding="utf-8")
    monkeypatch.setenv("JWT_EXPIRES_IN", "1h")
    values = read_environment(os.environ, str(env_file))
    assert values["WEBUI_NAME"] == "From dotenv" and values["JWT_EXPIRES_IN"] == "1h"


def test_redacted_settings_never_show_secrets(tmp_path: Path) -> None:
    s = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": SECRET,
            "WEBUI_ADMIN_EMAIL": "a@example.com",
            "WEBUI_ADMIN_PASSWORD": SECRET,
        }
    )
    shown = redacted_settings(s)
    assert SECRET not in repr(shown) and SECRET not in repr(s)
    assert shown["WEBUI_SECRET_KEY"] == "(set, redacted)"


def test_production_review_finds_weak_settings(tmp_path: Path) -> None:
    weak = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": "short",
            "JWT_EXPIRES_IN": "-1",
            "ENABLE_SIGNUP": "true",
            "DEFAULT_USER_ROLE": "user",
            "FORWARDED_ALLOW_IPS": "*",
            "HSTS": "",
        }
    )
    text = "\n".join(production_findings(weak))
    for name in (
        "WEBUI_SECRET_KEY",
        "JWT_EXPIRES_IN",
        "DEFAULT_USER_ROLE",
        "FORWARDED_ALLOW_IPS",
        "HSTS",
        "WEBUI_SESSION_COOKIE_SECURE",
        "WEBUI_URL",
        "MFA_REQUIRED_ROLES",
    ):
        assert name in text
    strong = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": SECRET,
            "WEBUI_SESSION_COOKIE_SECURE": "true",
            "WEBUI_URL": "https://chat.example.com",
            "ENABLE_SIGNUP": "false",
            "MFA_REQUIRED_ROLES": "admin",
        }
    )
    assert production_findings(strong) == []


def test_secrets_are_taken_byte_for_byte(tmp_path: Path) -> None:
    """A key read from a file may end in a newline; trimming it would change every derived key."""
    key = SECRET + "\n"
    settings = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": key}, env_file=None)
    assert settings.secret_key == key
    padded = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": SECRET,
            "WEBUI_ADMIN_EMAIL": "a@example.com",
            "WEBUI_ADMIN_PASSWORD": " spaced password ",
        },
        env_file=None,
    )
    assert padded.webui_admin_password is not None
    assert padded.webui_admin_password.get_secret_value() == " spaced password "


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_data_dir_is_refused_not_moved(tmp_path: Path, value: str) -> None:
    """It once meant the working directory: moving to ./data would mean a new database and admin."""
    with pytest.raises(ConfigError, match="DATA_DIR"):
        load_settings({"DATA_DIR": value, "WEBUI_SECRET_KEY": SECRET}, env_file=None)
    assert load_settings({"DATA_DIR": ".", "WEBUI_SECRET_KEY": SECRET}, env_file=None).data_dir == Path(".")


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("sqlite:///relative/wardgate.db", True),
        ("sqlite:////abs/with space/wardgate.db", True),
        ("sqlite://", True),
        ("postgres://u:p@db.internal/wardgate", True),
        ("postgresql+psycopg://u:p@db.internal:5432/wardgate", True),
        ("sqlite:/abs.db", False),
        ("sqlite:relative.db", False),
        ("postgresql+psycopg://u:p@h:/db", False),
        ("mysql://db/wardgate", False),
    ],
)
def test_database_urls_sqlalchemy_cannot_use_are_refused_at_load(
    tmp_path: Path, url: str, accepted: bool
) -> None:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "DATABASE_URL": url}
    if accepted:
        assert load_settings(env, env_file=None).database_url
    else:
        with pytest.raises(ConfigError, match="DATABASE_URL="):
            load_settings(env, env_file=None)


@pytest.mark.parametrize(
    ("name", "value"),
    [("REDIS_KEY_PREFIX", "{wardgate}"), ("REDIS_KEY_PREFIX", "prod/wardgate"), ("HOST", "my_host")],
)
def test_values_an_existing_env_may_hold_are_still_accepted(tmp_path: Path, name: str, value: str) -> None:
    load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, name: value}, env_file=None)


@pytest.mark.parametrize(
    "variables",
    [
        {"METRICS_ALLOW_IPS": "*"},
        {"METRICS_ALLOW_IPS": "0.0.0.0/0"},
        {"METRICS_ALLOW_IPS": "10.0.0.5", "FORWARDED_ALLOW_IPS": "*"},
    ],
)
def test_metrics_open_to_everyone_is_a_finding(
    make_settings: Callable[..., Settings], variables: dict[str, str]
) -> None:
    assert any(f.startswith("METRICS_ALLOW_IPS:") for f in production_findings(make_settings(**variables)))
    assert not any(
        f.startswith("METRICS_ALLOW_IPS:")
        for f in production_findings(make_settings(METRICS_ALLOW_IPS="10.0.0.5"))
    )
