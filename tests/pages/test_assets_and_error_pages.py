"""Static files under fingerprinted names (immutable, compressed once) and errors as pages for
browsers, JSON for programs: in-process, with the two pieces assembled as application.py does."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Mount
from starlette.testclient import TestClient

from tests.conftest import signup
from wardgate.gateway import Gateway
from wardgate.http import application
from wardgate.http.error_pages import install_error_pages
from wardgate.http.rendering import STATIC
from wardgate.http.static_files import IMMUTABLE, StaticAssets, fingerprinted

PAGE = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "sec-fetch-dest": "document"}


@pytest.fixture
def client(make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The app with the static files and error pages wired (until application.py carries them)."""
    built = application.build_routes

    def wired(gateway: Gateway, **kw: Any) -> FastAPI:
        app = built(gateway, **kw)
        if not hasattr(app.state, "static_assets"):
            assets = StaticAssets(STATIC)
            app.state.static_assets = assets
            app.router.routes.insert(0, _mount(gateway.settings.route_prefix, assets))
            install_error_pages(app)
        return app

    monkeypatch.setattr(application, "build_routes", wired)
    return make_client()


def _mount(prefix: str, assets: StaticAssets) -> Mount:
    return Mount(f"{prefix}/static", app=assets, name="static")


def test_pages_link_fingerprinted_assets_that_are_cached_for_good_and_compressed(client: TestClient) -> None:
    page = client.get("/auth")
    assert page.headers["cache-control"] == "no-store"
    css = re.search(r'href="(/static/wardgate\.[0-9a-f]{12}\.css)"', page.text)
    js = re.search(r'src="(/static/wardgate\.[0-9a-f]{12}\.js)"', page.text)
    assert css and js, page.text[:600]
    styled = client.get(css.group(1), headers={"accept-encoding": "gzip, br"})
    assert styled.status_code == 200 and styled.headers["cache-control"] == IMMUTABLE.decode()
    assert styled.headers["content-encoding"] == "gzip" and styled.headers["vary"] == "Accept-Encoding"
    assert styled.headers["content-type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in styled.text  # httpx decompressed it
    plain = client.get(css.group(1), headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["etag"] != styled.headers["etag"]  # two representations, two validators
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content
    again = client.get(css.group(1), headers={"if-none-match": styled.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    by_name = client.get("/static/wardgate.css")
    assert by_name.status_code == 200 and by_name.headers["cache-control"] == "no-cache"
    assert client.get("/static/missing.css").status_code == 404
    assert client.post(css.group(1)).status_code in (403, 405)  # CSRF or the method: never served
    assert "content-security-policy" in styled.headers  # the security headers still apply


def test_a_changed_file_gets_a_new_name(tmp_path: Any) -> None:
    (tmp_path / "a.css").write_text("a{}")
    first = StaticAssets(tmp_path).url_name("a.css")
    (tmp_path / "a.css").write_text("a{color:red}")
    second = StaticAssets(tmp_path).url_name("a.css")
    assert first != second and first.startswith("a.") and first.endswith(".css")
    assert fingerprinted("robots.txt", "abc") == "robots.abc.txt"


def test_browsers_get_pages_for_unknown_addresses_and_wrong_methods_and_programs_get_json(
    client: TestClient,
) -> None:
    missing = client.get("/account/nothing-here", headers=PAGE)
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    assert missing.headers["cache-control"] == "no-store"
    form_only = client.get("/auth/signin", headers=PAGE)
    assert form_only.status_code == 405 and "This address is for a form" in form_only.text
    assert client.get("/account/nothing-here").json() == {"detail": "Not Found"}
    assert client.get("/api/v1/nothing", headers=PAGE).json() == {"detail": "Not Found"}
    assert client.get("/auth/signin", headers={"accept": "*/*"}).json() == {"detail": "Method Not Allowed"}


def test_a_form_sent_after_the_session_ended_returns_to_its_page_and_says_why(client: TestClient) -> None:
    admin = signup(client, "ada@example.com")
    client.cookies.set("token", "expired.or.revoked")
    sent = client.post(
        "/account/password", data={"password": "x", "new_password": "y"}, follow_redirects=False
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == "/auth?redirect=/account%23password&notice=session-ended"
    page = client.get(sent.headers["location"])
    assert "Your session has ended" in page.text and 'value="/account#password"' in page.text
    admin_form = client.post(f"/admin/users/{admin['id']}/disable", follow_redirects=False)
    assert "redirect=/admin%23user-" in admin_form.headers["location"]
    assert "/disable" not in admin_form.headers["location"]  # never the form's own address
