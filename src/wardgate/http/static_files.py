"""The pages' static files: fingerprinted names cached for a year, compressed once, pure ASGI.

Every file of the directory is read once, when the application is assembled, and served under two
names: `wardgate.css` and `wardgate.<digest>.css`, the digest being the first 12 hex digits of its
SHA-256. Pages link the fingerprinted name (`asset_url`), which is `Cache-Control: public,
max-age=31536000, immutable` (RFC 8246): a changed file is a new name, so a browser never asks
again and never keeps a stale copy. The plain name is `no-cache` with an ETag (revalidated, 304).
Text files are gzip-compressed once, here, for clients that accept it (`Vary: Accept-Encoding`).
The pages themselves stay `no-store` and uncompressed: they show secrets next to text from the
request (recovery codes, the TOTP secret), which is what BREACH reads through compression.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.types import Receive, Scope, Send

IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
_COMPRESSIBLE = ("text/", "application/javascript", "image/svg+xml", "application/json")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes | None  # None when it would not be smaller
    media_type: bytes
    etag: bytes


def _media_type(path: Path) -> str:
    known = _TYPES.get(path.suffix)
    if known:
        return known
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def fingerprinted(name: str, digest: str) -> str:
    """`wardgate.css` with digest `abc` is `wardgate.abc.css`."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest}.{suffix}" if dot else f"{name}.{digest}"


class StaticAssets:
    """Serves one directory's files (not its subdirectories) from memory; mount it at `/static`."""

    def __init__(self, directory: Path) -> None:
        self._files: dict[str, tuple[_Asset, bytes]] = {}  # URL name: (asset, Cache-Control)
        self.urls: dict[str, str] = {}  # plain name: fingerprinted name
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:12]
            media_type = _media_type(path)
            packed = gzip.compress(body, 9, mtime=0) if media_type.startswith(_COMPRESSIBLE) else None
            asset = _Asset(
                body,
                packed if packed is not None and len(packed) < len(body) else None,
                media_type.encode("latin-1"),
                f'"{digest}"'.encode("ascii"),
            )
            name = fingerprinted(path.name, digest)
            self.urls[path.name] = name
            self._files[path.name] = (asset, REVALIDATE)
            self._files[name] = (asset, IMMUTABLE)

    def url_name(self, name: str) -> str:
        """The fingerprinted name of a file (the plain name for one that is not there)."""
        return self.urls.get(name, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        name = path[len(root) :] if root and path.startswith(root) else path
        found = self._files.get(name.lstrip("/"))
        if found is None:
            await _plain(send, 404, b"Not Found")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, b"Method Not Allowed", [(b"allow", b"GET, HEAD")])
            return
        asset, cache = found
        headers = _headers(scope)
        body, encoding, etag = asset.body, [], asset.etag
        if asset.gzipped is not None and _accepts_gzip(headers.get(b"accept-encoding", b"")):
            # Another representation, another strong validator (RFC 9110 §8.8.3).
            body, encoding, etag = asset.gzipped, [(b"content-encoding", b"gzip")], asset.etag[:-1] + b'-gz"'
        common = [(b"cache-control", cache), (b"etag", etag), (b"vary", b"Accept-Encoding")]
        if etag in _etags(headers.get(b"if-none-match", b"")):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        start = [
            (b"content-type", asset.media_type),
            (b"content-length", str(len(body)).encode("ascii")),
            *encoding,
            *common,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _etags(value: bytes) -> set[bytes]:
    """The entity tags of an If-None-Match (RFC 9110 §13.1.2), weak ones compared weakly."""
    return {tag.strip().removeprefix(b"W/") for tag in value.split(b",") if tag.strip()}


def _accepts_gzip(value: bytes) -> bool:
    """Whether Accept-Encoding (RFC 9110 §12.5.3) takes gzip: listed and not `q=0`."""
    for item in value.lower().split(b","):
        coding, _, params = item.strip().partition(b";")
        if coding.strip() in (b"gzip", b"*"):
            q = params.strip().removeprefix(b"q=").strip() if params.strip().startswith(b"q=") else b"1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


async def _plain(
    send: Send, status: int, text: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode("ascii")),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
