"""The web layer, and the only package that imports FastAPI and Starlette.

`application` assembles the middleware (`middleware/`, pure ASGI, one file each), the routes
(`routes/`, one file per API area, plus the pages) and the relay to upstreams (`relay/`). Routes
adapt HTTP to the services of the `Gateway` and read the deployment from one frozen `Site`.

May import every other package except the command line.
"""
