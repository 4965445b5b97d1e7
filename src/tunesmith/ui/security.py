"""What the web UI enforces on every request: who may call it, how much they may send, and
which files they may name.

- The UI binds 127.0.0.1 unless told otherwise; on any other address a token is required.
- Every request that changes state (POST/PUT/DELETE) carries the token in the
  ``X-Tunesmith-Token`` header. A browser only sends a custom header from a page of the
  same origin, so another site cannot make the user's browser start or stop runs (no CSRF
  through cookies: there are no cookies). On 127.0.0.1 the page itself carries the token.
- On 127.0.0.1 the ``Host`` header must name this machine, so a page whose DNS name was
  rebound to 127.0.0.1 cannot read the page (and its token).
- Reads need the token too when the UI is bound to another address (``?token=`` is
  accepted for reads, since a browser's EventSource cannot send headers).
- Bodies are read with a size limit; every path is resolved (symlinks followed at every
  level) and must lie inside the workspace.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

from tunesmith.config.section import check_safe_name

TOKEN_HEADER = "x-tunesmith-token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable from this machine only."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def make_token(host: str, token: str | None) -> str:
    """The token requests must carry: the one given, or a fresh random one on 127.0.0.1.

    Raises:
        ValueError: bound to another address without a token (anyone on the network could
            otherwise start runs and read files).
    """
    if token:
        return token
    if not is_loopback(host):
        raise ValueError(f"Binding the UI to {host} needs a token: pass --token (or set TUNESMITH_UI_TOKEN).")
    return secrets.token_urlsafe(24)


class Guard:
    """Checks one request: host, token, body size."""

    def __init__(self, host: str, token: str, max_upload_bytes: int):
        self.loopback = is_loopback(host)
        self.token = token
        self.max_upload_bytes = max_upload_bytes

    def check(self, request: Request) -> None:
        """Raise 403/401 unless the request may go on (see the module docstring)."""
        if self.loopback and _host_name(request.headers.get("host", "")) not in LOOPBACK_HOSTS:
            raise HTTPException(403, "This UI answers only to 127.0.0.1 / localhost (the Host header names "
                                     "another site).")
        path = request.url.path
        if path == "/" or path.startswith("/static/"):
            return  # the page and its assets; the page holds the token only on 127.0.0.1
        sent = request.headers.get(TOKEN_HEADER)
        if sent is None and request.method not in STATE_CHANGING:
            sent = request.query_params.get("token")
        needs_token = request.method in STATE_CHANGING or not self.loopback
        if needs_token and not (sent and hmac.compare_digest(sent, self.token)):
            raise HTTPException(401, f"Missing or wrong token: send it in the {TOKEN_HEADER} header.")

    async def read_body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body: 413 once it passes ``limit`` bytes, 408 when it arrives too slowly."""
        from tunesmith.serve.http import read_body

        limit = limit or self.max_upload_bytes

        def too_large():
            return HTTPException(413, f"The upload is over the limit of {limit / 1e6:g} MB.")

        try:
            return await read_body(request, limit, too_large)
        except TimeoutError:
            raise HTTPException(408, "The upload arrived too slowly.") from None


def _host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:7860`` -> ``[::1]``)."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is one safe folder name, by the schema's own rule (``config.section.check_safe_name``).

    Raises:
        HTTPException: 400 naming ``what``: empty, ``.``/``..``, a slash, or other characters.
    """
    try:
        return check_safe_name(name if isinstance(name, str) else "")
    except ValueError as exc:
        raise HTTPException(400, f"Invalid {what}: {exc}.") from None


def inside(root: Path, relative: str | Path, what: str = "path") -> Path:
    """``root / relative`` resolved (every symlink followed) if it stays inside ``root``.

    Raises:
        HTTPException: 403 when it leaves ``root`` (``..``, an absolute path, a symlink out),
            400 when it holds a NUL byte.
    """
    text = str(relative)
    if "\x00" in text:
        raise HTTPException(400, f"Invalid {what}: it contains a NUL byte.")
    base = root.resolve()
    resolved = (base / text).resolve()
    if not resolved.is_relative_to(base):
        raise HTTPException(403, f"The {what} {text!r} is outside the workspace.")
    return resolved
