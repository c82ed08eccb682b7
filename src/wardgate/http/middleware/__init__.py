"""Pure-ASGI middleware, one per file, each with its values computed once at construction.

May import the core's values (`config`, `security`'s header policy, `audit`'s request context) and
`wardgate.http.scope`; they are given their values when the application is assembled.
"""
