"""When a request reached the emulator: stamped by the HTTP protocol, before the app runs.

The emulator's simulated API server starts on a request when the request arrives (docs/emulator.md),
as `servelab bench serve`'s does. The emulator itself is one asyncio loop. Under load, uvicorn
parses many requests in one pass over the ready sockets, and each one's app call waits behind
what the loop is doing meanwhile: streaming the tokens of a step, the other requests. Measured
at 256 streams, a request's app was called 9.5 ms (mean) after its first bytes were parsed, and
up to 190 ms in the first wave, when 256 requests come at once. Counted from the app's call,
that wait would be paid twice: once in the simulated API server's queue, once on the wall clock.

So the HTTP protocol stamps each request when its first bytes are parsed (``on_message_begin``),
with ``time.monotonic``, the server's clock. A connection's first request whose bytes were
already waiting when the connection was accepted is stamped at the accept: it was there by then.
The app keeps that stamp (``app.py``); with another HTTP implementation (h11, when httptools is
missing) the app stamps its own call, as before.
"""

from __future__ import annotations

import array
import fcntl
import termios
import time

RECEIVED = "servelab.received"  # scope key: the server's clock when the request reached it


def bytes_waiting(transport) -> int:
    """Bytes in the socket's receive queue, not yet read (0 when the socket cannot say)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]


def stamping_protocol() -> type:
    """uvicorn's httptools protocol, stamping each request's arrival in its ASGI scope (imported
    here: httptools is a dependency, but `servelab serve` runs on h11 without it)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return type("StampingHttpToolsProtocol", (_Stamping, HttpToolsProtocol), {})


class _Stamping:
    """The stamping, mixed into uvicorn's protocol class by stamping_protocol()."""

    def connection_made(self, transport) -> None:
        self._waiting_since = time.monotonic() if bytes_waiting(transport) else None
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        since, self._waiting_since = self._waiting_since, None
        self.scope[RECEIVED] = since if since is not None else time.monotonic()
