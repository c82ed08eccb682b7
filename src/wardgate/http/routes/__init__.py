"""The routes: one module per API area (Open WebUI's auth API, users, API keys, audit, single
sign-on, public endpoints) and the server-rendered pages.

May import the services through `wardgate.http.deps` and the core packages' values.
"""
