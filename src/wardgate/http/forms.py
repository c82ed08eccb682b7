"""HTML forms as wardgate's pages send them: URL-encoded fields, read as text.

A browser sends a form without a file as `application/x-www-form-urlencoded` (HTML's default
enctype): every form of wardgate's pages is one, and so is the provider's back-channel logout
(OpenID Connect Back-Channel Logout 1.0 §2.5). Any other body is refused (415) before it is parsed.
Starlette's multipart parser decodes fields with whatever `charset` the request names: some codecs
fail with an error it does not catch (`undefined`: a 500 before authentication, found by review),
others make text that no password hash or page can encode (`unicode_escape`: lone surrogates).
URL-encoded fields are read as UTF-8, with U+FFFD for any byte that is not.
"""

from __future__ import annotations

from starlette.requests import Request

from wardgate.errors import UnsupportedMediaError

FORM_TYPE = "application/x-www-form-urlencoded"


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form ({} for a request with no body type); 415 for any other."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in ("", FORM_TYPE):
        raise UnsupportedMediaError(f"This form is sent as {FORM_TYPE}.")
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}
