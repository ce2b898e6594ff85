"""How `newsletter serve` runs uvicorn: bounded request headers, a header deadline, proxy trust.

Why a module of its own: uvicorn with httptools puts no limit on request headers. httptools
buffers a header until its end, so one client streaming a 50 MB header got a 200 and eight
slow 100 MB headers took the server from 73 MB to 935 MB of memory. ``LimitedHttpTools`` is a
small subclass of uvicorn's ``HttpToolsProtocol`` (the fast parser stays) that

* counts the bytes of each request before its headers end and answers **431** once they pass
  ``max_total`` (64 KB, request line included) or one header line passes ``max_line``
  (16 KB): the bytes are fed to the parser at most up to the limit, so nothing past it is
  ever buffered;
* gives a client ``header_timeout`` seconds (10) from connecting, or from the first byte of a
  following request on a kept-alive connection, to finish its headers, then answers 408;
* closes a connection whose request body is still arriving ``body_timeout`` seconds (30) after
  its headers and whose response is sent (checked again every 30 seconds while it is not), so a client trickling a body nobody reads cannot
  keep it open (the web app bounds the time to read a body it does read: ``BodyLimit`` in
  web/middleware.py, 408, same 30 seconds).

After a 431 or 408 the connection is half-closed, reading stops (the rest of a flood stays in
the client's buffers, not ours), and ``LINGER_SECONDS`` later it is closed: closing at once
could make the kernel reset the connection before the client has read the answer.

Proxy headers: uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise (and its
FORWARDED_ALLOW_IPS environment variable may widen that), which let any local client choose its
address for the rate limits and the consent record. ``server_config`` always passes both
``proxy_headers`` and ``forwarded_allow_ips`` explicitly, from NEWSLETTER_TRUSTED_PROXIES only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from newsletter.adapters.i18n import N_, gettext
from newsletter.config import Settings

#: seconds between refusing a request (431, 408) and closing its connection
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits on a request before the app sees it; bytes and seconds."""

    max_line: int = 16 * 1024
    max_total: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0  # for the rest of a body once the app has answered
    locale: str = "en"  # of the one-line text of a 431 or 408


class HeadersRefused(Exception):
    """Raised inside a parser callback to stop parsing a request we will not serve."""


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and a header deadline (see the module)."""

    limits: ClassVar[ServerLimits] = ServerLimits()

    @classmethod
    def with_limits(cls, limits: ServerLimits) -> type[LimitedHttpTools]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0  # of the current request, until its headers end
        self._in_headers = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()  # a client that connects and sends nothing is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # already in flight when reading stopped: thrown away, never buffered
        while data and self._in_headers:
            self._start_header_timer()
            room = self.limits.max_total - self._header_bytes
            if room <= 0:
                self._refuse(431)
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            if not self._feed(piece):
                return
        if data:
            # The headers ended inside the last piece: the rest is body (or, pipelined, a next
            # request, whose bytes in this one read go uncounted: at most one read's worth).
            self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Feed the parser as uvicorn does; False once the connection is being closed."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn does (we serve no websockets)
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError:
            if self._refused:
                return False  # our own HeadersRefused, raised from a callback
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return False
        return not self.transport.is_closing()

    # -- parser callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.limits.max_line:
            self._refuse(431)
            raise HeadersRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_overdue)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        # The next bytes on this connection are the next request's: count them afresh.
        self._in_headers = True
        self._header_bytes = 0

    # -- refusing --------------------------------------------------------------------------------

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._refuse, 408)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _body_overdue(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        if cycle.response_complete:
            # Answered (an error page, a body the app did not need), yet the body is still
            # trickling in: nothing more is owed to this connection.
            self.transport.close()
        else:
            # The app is still at work; if it reads the body, its own deadline (BodyLimit in
            # web/middleware.py) answers 408. Look again later.
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_overdue)

    def _refuse(self, status: int) -> None:
        """Answer ``status`` with one line of text, half-close, drain briefly, close."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel_header_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is still being answered: no answer of ours may cut into
            # it. Read no more, and close once it is sent.
            self.cycle.keep_alive = False
            return
        key = (
            N_("Request headers too large.")
            if status == 431
            else N_("The request arrived too slowly.")
        )
        body = gettext(self.limits.locale, key).encode("utf-8") + b"\n"
        head = [STATUS_LINE[status]]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.pause_reading()
        self.loop.call_later(LINGER_SECONDS, self._close)
        self.logger.warning("request refused with %s", status)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def server_config(
    app: Any,
    settings: Settings,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of `newsletter serve` (and of the tests' live server)."""
    header_limits = limits or ServerLimits(locale=settings.locale)
    trusted = list(settings.trusted_proxies)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=LimitedHttpTools.with_limits(header_limits),
        # Both always given: uvicorn would otherwise trust 127.0.0.1, or FORWARDED_ALLOW_IPS.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        # No access log: paths carry link tokens; the app logs its own redacted line.
        access_log=False,
        server_header=False,
        **options,
    )
