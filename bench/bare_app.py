"""The floors for the benchmarks: a bare FastAPI app, or a raw ASGI callable, on wardgate's server.

Served by wardgate's own `wardgate.http.server.run()`, so the server stack is exactly wardgate's:
uvloop, the same `BoundedHttpToolsProtocol` subclass (httptools) with the same limits, the same
uvicorn options (no access log, date header, keep-alive, graceful shutdown) and the same malloc
setting. Only the application differs:

- default (`auth_overhead.py`'s row 0): FastAPI with one `async def` route, `/bare`, returning a
  constant dict; no wardgate middleware, no dependencies, no response model (FastAPI's default
  `jsonable_encoder` + `JSONResponse` still run, as for any route returning a dict);
- `--raw` (`proxy.py`'s "bare ASGI" row): a plain ASGI callable that answers every HTTP path with
  the same constant JSON, pre-encoded: two `send` calls and nothing else, so what it costs is the
  server's protocol and the event loop, the floor any ASGI application on this stack stands on.

The settings come from the same environment the wardgate process gets (HOST, PORT, ...).

    .venv/bin/python bench/bare_app.py [--raw]   # started by the benchmarks; stops on SIGTERM
"""

from __future__ import annotations

import json
import os
import sys

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from wardgate.config import load_settings
from wardgate.config.loading import read_environment
from wardgate.http import server

BODY = {"status": True, "name": "bare", "detail": "a constant JSON body"}
_RAW_BODY = json.dumps(BODY, separators=(",", ":")).encode()
_RAW_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_RAW_BODY)).encode())]


def bare_app() -> FastAPI:
    """FastAPI with one async route returning a constant dict (FastAPI's default JSON encoding)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare", response_model=None)  # the annotation documents; it does not validate
    async def bare() -> dict[str, object]:
        return BODY

    return app


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI application: the constant JSON on every HTTP request; lifespan acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _RAW_HEADERS})
    await send({"type": "http.response.body", "body": _RAW_BODY})


def main() -> None:
    """Serve the bare app (or, with `--raw`, the raw ASGI callable) as `wardgate serve` would."""
    settings = load_settings(read_environment(os.environ, env_file=None), persist_secret=False)
    app = raw_app if "--raw" in sys.argv[1:] else bare_app()
    server.run(app, settings, host=settings.host, port=settings.port, certfile=None, keyfile=None)


if __name__ == "__main__":
    main()
