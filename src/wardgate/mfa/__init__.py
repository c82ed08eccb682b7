"""Second factors: TOTP (authenticator apps), passkeys (WebAuthn) and recovery codes.

`factors` holds what an account has enrolled; `totp`, `recovery` and `passkeys` check each kind;
`service` holds the operations the HTTP layer calls: the step between a first factor and the session
(the `mfa_token`), enrolment, step-up and an admin's reset. The cryptography is the libraries' —
pyotp, py_webauthn, cryptography — and nothing here hand-writes a protocol.

May import `config`, `security`, `storage`, `audit`, `sessions`, `identity` and `wardgate.errors`;
the gateway builds it and the routes drive it.
"""
