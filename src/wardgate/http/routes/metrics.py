"""`GET /metrics`: Prometheus's scrape, for the holder of `METRICS_TOKEN` or an address in
`METRICS_ALLOW_IPS`, refused (403) to anyone else.

The route exists only when one of the two is configured (`application.build_routes`): otherwise
the path is not wardgate's (404, or the app's when an app upstream takes every path). The address
is the client's as the trusted-proxy middleware resolved it; the token is compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from wardgate.config.network import TrustedProxies
from wardgate.errors import StoreUnavailableError
from wardgate.http.deps import GatewayDep
from wardgate.observability.metrics import CONTENT_TYPE, exposition

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
COUNT_EVERY = 15.0  # seconds: live sessions are counted in the database at most this often
REFUSED = "Metrics need the metrics token or an allowed address."


@dataclass
class MetricsAccess:
    """Who may read the metrics, and the live-session count last read (shared by the scrapes)."""

    token: bytes | None  # METRICS_TOKEN
    addresses: TrustedProxies  # METRICS_ALLOW_IPS
    counted: tuple[float, int | None] = field(default=(-COUNT_EVERY, None))

    def allows(self, authorization: str | None, client: str | None) -> bool:
        """The bearer token, compared in constant time, or an allowed address."""
        if self.token is not None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token):
                return True
        return self.addresses.trusts(client)


@router.get("/metrics")
async def metrics(request: Request, gw: GatewayDep) -> Response:
    """The metrics in Prometheus's text format."""
    access: MetricsAccess = request.app.state.metrics_access
    client = request.client.host if request.client else None
    if not access.allows(request.headers.get("authorization"), client):
        return JSONResponse({"detail": REFUSED}, status_code=403)
    at, live = access.counted
    if time.monotonic() - at >= COUNT_EVERY:
        try:
            live = await anyio.to_thread.run_sync(gw.registry.live_sessions, int(time.time()))
        except StoreUnavailableError as exc:
            log.warning("metrics: %s", exc)
            live = None  # left out of this scrape, not a failed scrape
        access.counted = (time.monotonic(), live)
    return Response(exposition(live_sessions=live), media_type=CONTENT_TYPE)
