"""How ``tunesmith serve`` and ``tunesmith ui`` run uvicorn: with limits on slow clients.

uvicorn closes an idle keep-alive connection, but a client that connects and then sends its
headers a byte at a time (or not at all) holds a connection for ever. ``SlowClientProtocol``
closes a connection that has not delivered a complete request head within
``HEADERS_TIMEOUT_S``; bodies are read with their own deadline (:func:`read_body`). The
first Ctrl-C / SIGTERM shuts down, waiting at most ``GRACEFUL_S`` for requests in flight.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADERS_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
GRACEFUL_S = 5


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is too slow."""

    headers_timeout_s = HEADERS_TIMEOUT_S

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline = self.loop.call_later(self.headers_timeout_s, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._head_deadline.cancel()
        super().connection_lost(exc)


def uvicorn_config(app, host: str, port: int, protocol=None):
    """The uvicorn Config both servers use (``protocol``: a :class:`SlowClientProtocol` subclass)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol or SlowClientProtocol,
                          timeout_keep_alive=5,
                          timeout_graceful_shutdown=GRACEFUL_S)


async def read_body(request, limit: int, too_large) -> bytes:
    """The request body, at most ``limit`` bytes (else ``too_large()`` is raised) and within
    ``BODY_TIMEOUT_S`` (else a 408 ``TimeoutError``)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large()
    body = bytearray()

    async def collect():
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise too_large()

    await asyncio.wait_for(collect(), BODY_TIMEOUT_S)
    return bytes(body)
