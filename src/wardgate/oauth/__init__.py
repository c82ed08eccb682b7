"""Single sign-on (OAuth 2.0 and OpenID Connect): providers, the flow, account linking, token storage."""
