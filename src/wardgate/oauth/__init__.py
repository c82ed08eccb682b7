"""Single sign-on: OAuth 2.0 and OpenID Connect with Google, Microsoft, GitHub and any OIDC provider.

`service.SignOn` composes the protocol (`flow`, Authlib), discovery and keys (`metadata`), the
browser-bound pending sign-in (`state`), the one account-linking chokepoint (`linking`), provider
presets from the settings (`presets`) and encrypted provider tokens (`token_store`).

May import `config`, `security`, `storage`, `audit`, `sessions` and `identity` (and `wardgate.errors`).
"""
