"""The one exception tree of wardgate.

```text
WardgateError
├── ConfigError                 invalid configuration; start-up stops
├── StoreError                  a database or cache could not be reached or answered wrongly
│   └── StoreUnavailableError   the store is down; callers decide fail-open or fail-closed
├── UpstreamError               a proxied service refused, reset or garbled the exchange (502)
│   └── UpstreamTimeoutError    it did not connect or answer in time (504)
└── ApiError                    refused request; carries an HTTP status and a stable code
    ├── AuthenticationError     401: no, bad, expired or revoked credential
    ├── PermissionDeniedError   403: authenticated but not allowed
    ├── NotFoundError           404
    ├── BadRequestError         400: input that is well-formed but refused
    ├── ConflictError           409
    ├── TooLargeError           413: a body past its limit
    ├── UnsupportedMediaError   415: a body of a type this request does not take
    ├── ProviderError           502: a sign-in provider failed or answered something unverifiable
    └── RateLimitedError        429, with a retry-after in seconds
        └── BusyError           503: admission control (too many concurrent password hashes)
```

Routes never build error bodies themselves: the HTTP layer turns an `ApiError` into
`{"detail": message}` with its status, and `code` is available to templates and logs.
"""

from __future__ import annotations


class WardgateError(Exception):
    """Root of every error wardgate raises on purpose."""


class ConfigError(WardgateError):
    """The configuration is invalid; `problems` lists every offending variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class StoreError(WardgateError):
    """A backing store failed."""


class StoreUnavailableError(StoreError):
    """A backing store cannot be reached."""


class UpstreamError(WardgateError):
    """A service behind wardgate could not be reached, or broke the exchange off."""


class UpstreamTimeoutError(UpstreamError):
    """A service behind wardgate did not connect or answer in time."""


class ApiError(WardgateError):
    """A refused API request: status, stable code and a message safe to show."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, detail: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers = headers or {}


class AuthenticationError(ApiError):
    """No valid credential."""

    status_code = 401
    code = "not_authenticated"


class PermissionDeniedError(ApiError):
    """Authenticated but not allowed."""

    status_code = 403
    code = "forbidden"


class EnrolmentRequiredError(PermissionDeniedError):
    """The account's role needs a second factor it does not have: it may only enrol one."""

    code = "mfa_enrolment_required"


class NotFoundError(ApiError):
    """The object does not exist (or the caller may not know it does)."""

    status_code = 404
    code = "not_found"


class BadRequestError(ApiError):
    """Well-formed input that is refused."""

    status_code = 400
    code = "bad_request"


class ConflictError(ApiError):
    """The change conflicts with the current state."""

    status_code = 409
    code = "conflict"


class TooLargeError(ApiError):
    """A request body larger than what this kind of request may send."""

    status_code = 413
    code = "too_large"


class UnsupportedMediaError(ApiError):
    """A body whose Content-Type this request does not take."""

    status_code = 415
    code = "unsupported_media_type"


class ProviderError(ApiError):
    """A single-sign-on provider could not be reached, refused, or answered something unverifiable."""

    status_code = 502
    code = "provider_error"


class RateLimitedError(ApiError):
    """Too many attempts; retry after `retry_after` seconds.

    `bucket` names what was counted (limit and key) and `window` the limit's period in seconds, so
    that the audit log can record a flood of refusals of one bucket as one row per window.
    """

    status_code = 429
    code = "rate_limited"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int,
        code: str | None = None,
        bucket: str | None = None,
        window: int | None = None,
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        self.bucket = bucket
        self.window = window
        super().__init__(detail, code=code, headers={"Retry-After": str(self.retry_after)})


class BusyError(RateLimitedError):
    """The server is at capacity for this kind of work; retry shortly."""

    status_code = 503
    code = "busy"
