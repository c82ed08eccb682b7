"""The floor for `auth_overhead.py`: a bare FastAPI app, one `async def` route, a constant JSON body.

Served by wardgate's own `wardgate.http.server.run()`, so the server stack is exactly wardgate's:
uvloop, the same `BoundedHttpToolsProtocol` subclass (httptools) with the same limits, the same
uvicorn options (no access log, date header, keep-alive, graceful shutdown) and the same malloc
setting. Only the application differs: no wardgate middleware, no dependencies, no response model
(FastAPI's default `jsonable_encoder` + `JSONResponse` still run, as for any route returning a dict).
The settings come from the same environment the wardgate process gets (HOST, PORT, ...).

    .venv/bin/python bench/bare_app.py     # started by auth_overhead.py; stops on SIGTERM
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from wardgate.config import load_settings
from wardgate.config.loading import read_environment
from wardgate.http import server

BODY = {"status": True, "name": "bare", "detail": "a constant JSON body"}


def bare_app() -> FastAPI:
    """FastAPI with one async route returning a constant dict (FastAPI's default JSON encoding)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare", response_model=None)  # the annotation documents; it does not validate
    async def bare() -> dict[str, object]:
        return BODY

    return app


def main() -> None:
    """Serve the bare app as `wardgate serve` would serve wardgate."""
    settings = load_settings(read_environment(os.environ, env_file=None), persist_secret=False)
    server.run(bare_app(), settings, host=settings.host, port=settings.port, certfile=None, keyfile=None)


if __name__ == "__main__":
    main()
