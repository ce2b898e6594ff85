"""SMTP adapter: one reusable relay connection, with every failure sorted into what to do next.

``SmtpConnection.open()`` (called by the first ``send``) opens a session ready for MAIL, or raises:
- ``RelayUnreachable``: no session this time (refused, silent, closed, timed out); worth another
  try, which the delivery pool makes within a bounded budget;
- ``RelayMisconfigured``: the relay answered in a way another try cannot change (its
  certificate does not verify, TLS on the wrong port, STARTTLS or AUTH not offered, our login
  refused): a configuration problem, stop.
The whole opening (TCP connect, TLS handshake, greeting, EHLO, STARTTLS, AUTH) has one deadline,
``NEWSLETTER_SMTP_CONNECT_TIMEOUT``: a relay that accepts the connection and never says 220
costs that long, not the per-step timeout once per step.

``SmtpConnection.send()`` either returns (the relay took the message) or raises one of:
- ``PermanentFailure``: a 5xx for this recipient; never retry it, the address bounced;
- ``TemporaryFailure``: a 4xx for this recipient; retry later in the same run;
- ``ConnectionLost``: the connection broke (421, reset, timeout); reconnect and retry;
- ``UncertainDelivery``: the whole message went out but no reply to its final "." came within
  the timeout: the relay may have queued it, so it is never retransmitted in the same run;
- ``RelayRefusedSender``: the relay refuses our From address: a configuration problem, stop.
Every reply is read under one deadline (``NEWSLETTER_SMTP_TIMEOUT``) however many continuation
lines the relay sends, and ``SmtpConnection.abort()`` wakes a read (or an opening) from another
thread, so no relay can hold a worker longer than the timeout. Certificates are always verified
(``ssl.create_default_context()``) and AUTH is only sent over TLS.

``probe_relay()`` opens one session and closes it (QUIT) without MAIL: `newsletter check`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.config import Settings
from newsletter.domain.errors import NewsletterError


class SmtpFailure(NewsletterError):
    """Base of the per-message outcomes below."""


class PermanentFailure(SmtpFailure):
    pass


class AddressNeedsSmtpUtf8(PermanentFailure):
    """A non-ASCII local part and a relay without SMTPUTF8: never tried, so it did not bounce."""


class TemporaryFailure(SmtpFailure):
    pass


class ConnectionLost(SmtpFailure):
    pass


class RelayTimedOut(ConnectionLost):
    """A reply before the message's content did not come in time: nothing was delivered."""


class UncertainDelivery(SmtpFailure):
    """The message was sent whole but its reply never came: the relay may or may not have it.

    RFC 5321 (4.5.3.2.6) lets a relay take 10 minutes over this reply, and a retransmission of a
    message it did queue is a duplicate; the caller records it and never resends it in this run.
    """


class ReplyTimeout(TimeoutError):
    """A reply (with all its continuation lines) did not end within the SMTP timeout."""


# A reply longer than this many lines is not an SMTP reply but a relay talking forever.
MAX_REPLY_LINES = 100


class _DeadlineReplies:
    """``getreply`` with one deadline per reply, read straight from the socket.

    smtplib's own ``getreply`` applies the timeout to each read, so a relay that sends a
    continuation line ("250-...") every few seconds keeps it reading forever. Here the whole
    reply must end within ``timeout`` seconds and within ``MAX_REPLY_LINES`` lines. The buffer
    belongs to one socket: after STARTTLS (a new socket) whatever the relay pipelined in clear
    text is dropped, as RFC 3207 requires.
    """

    sock: socket.socket | None
    timeout: float
    _buffer: bytes = b""
    _buffer_sock: object = None
    # While the session is being opened: the one deadline of the whole opening, and the step
    # under way (what a failure is reported as: "no greeting within 10 s").
    opening_deadline: float | None = None
    stage: str = "connect"

    def opening_timeout(self, timeout: float) -> float:
        """``timeout``, or what is left of the opening's deadline while it runs."""
        if self.opening_deadline is None:
            return timeout
        return max(self.opening_deadline - time.monotonic(), 0.001)

    def getreply(self) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout
        if self.opening_deadline is not None:
            deadline = min(deadline, self.opening_deadline)
        lines: list[bytes] = []
        while True:
            line = self._readline(deadline)
            if len(line) > smtplib._MAXLINE:  # type: ignore[attr-defined]
                self.close()  # type: ignore[attr-defined]  # smtplib.SMTP.close
                raise smtplib.SMTPResponseException(500, b"Line too long.")
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(lines)
            if line[3:4] != b"-":
                return code, b"\n".join(lines)
            if len(lines) >= MAX_REPLY_LINES:
                self.close()  # type: ignore[attr-defined]
                raise ReplyTimeout(f"the relay's reply went on for over {MAX_REPLY_LINES} lines")

    def _readline(self, deadline: float) -> bytes:
        sock = self.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        if self._buffer_sock is not sock:
            self._buffer, self._buffer_sock = b"", sock
        timeout_changed = False
        try:
            while b"\n" not in self._buffer and len(self._buffer) <= smtplib._MAXLINE:  # type: ignore[attr-defined]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReplyTimeout(f"no complete reply within {self.timeout:g} s")
                if remaining < self.timeout * 0.99:  # the hot path (a prompt reply) skips this
                    sock.settimeout(remaining)
                    timeout_changed = True
                chunk = sock.recv(8192)
                if not chunk:
                    self.close()  # type: ignore[attr-defined]
                    raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
                self._buffer += chunk
        except ReplyTimeout:
            raise
        except TimeoutError:
            raise ReplyTimeout(f"no complete reply within {self.timeout:g} s") from None
        except OSError as err:
            self.close()  # type: ignore[attr-defined]
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {err}") from None
        finally:
            if timeout_changed:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.timeout)  # sends keep the plain per-operation timeout
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return line + newline


class _Smtp(_DeadlineReplies, smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.stage = "connect"
        sock = super()._get_socket(host, port, self.opening_timeout(timeout))
        self.stage = "greeting"
        return sock


class _SmtpSsl(_DeadlineReplies, smtplib.SMTP_SSL):
    context: ssl.SSLContext

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # SMTP_SSL's own _get_socket, with the handshake under what is left of the deadline.
        self.stage = "connect"
        sock = smtplib.SMTP._get_socket(self, host, port, self.opening_timeout(timeout))
        self.stage = "TLS handshake"
        try:
            sock.settimeout(self.opening_timeout(timeout))
            tls = self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        self.stage = "greeting"
        return tls


class RelayUnreachable(NewsletterError):
    """No session with the relay this time (refused, silent, closed): worth another try.

    ``reason`` is the cause alone ("no greeting within 10 s"), for one-line reports that name
    the relay themselves (the pool's retry lines, ``probe_relay``).
    """

    def __init__(self, message: str, hint: str | None = None, *, reason: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason or message


class RelayMisconfigured(NewsletterError):
    """The relay answered in a way another try cannot change: a configuration problem, stop.

    Its certificate does not verify, TLS is spoken on the wrong port, STARTTLS or AUTH is not
    offered, our login or our address is refused: never retried, exit 2.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, reason: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason or message


class RelayRefusedSender(RelayMisconfigured):
    """The relay rejects our sender address: every message would fail the same way."""


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # none | starttls | tls
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    connect_timeout: float = 10.0  # the whole opening: connect, TLS, greeting, EHLO, AUTH
    # Tests point this at a private CA; production leaves it None (the system's trust store).
    cafile: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            connect_timeout=settings.smtp_connect_timeout,
        )

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _envelope(sender: str, recipient: str, *, smtputf8: bool) -> tuple[bytes, bytes]:
    """The MAIL and RCPT command lines; addresses were validated, CR/LF cannot reach here.

    A non-ASCII address (``élodie@exemple.ma``) goes in UTF-8 with MAIL's SMTPUTF8 parameter
    (RFC 6531) when ``smtputf8`` (the relay offered it); otherwise ``UnicodeEncodeError``.
    """
    for address in (sender, recipient):
        if any(c in address for c in "\r\n<>"):
            raise UnicodeEncodeError("ascii", address, 0, 1, "not a plain address")
    if sender.isascii() and recipient.isascii():
        return (
            f"MAIL FROM:<{sender}>\r\n".encode("ascii"),
            f"RCPT TO:<{recipient}>\r\n".encode("ascii"),
        )
    if not smtputf8:
        raise UnicodeEncodeError("ascii", recipient, 0, 1, "the relay does not offer SMTPUTF8")
    return (
        f"MAIL FROM:<{sender}> SMTPUTF8\r\n".encode(),
        f"RCPT TO:<{recipient}>\r\n".encode(),
    )


def _describe(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPResponseException):
        text = (
            err.smtp_error.decode(errors="replace")
            if isinstance(err.smtp_error, bytes)
            else str(err.smtp_error)
        )
        return f"{err.smtp_code} {' '.join(text.split())}"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


@functools.cache
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """One verifying context per trust store, shared by every connection (an SSLContext is
    thread-safe): loading the system's CA bundle costs tens of milliseconds, 50 connections
    opening at once paid it 50 times."""
    return ssl.create_default_context(cafile=cafile)


class SmtpConnection:
    """One session with the relay, opened lazily and reused for many messages."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: smtplib.SMTP | None = None
        self._opening: _DeadlineReplies | None = None  # the session open() is building
        self._lock = threading.Lock()  # abort() runs in another thread than the sends
        self._aborted = False

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def smtputf8(self) -> bool:
        """Whether the open session's EHLO offered SMTPUTF8 (RFC 6531)."""
        client = self._client
        return client is not None and bool(client.does_esmtp) and client.has_extn("smtputf8")

    def open(self) -> None:
        """Open a session ready for MAIL: connect, greeting, EHLO, STARTTLS, AUTH when configured.

        The whole opening has one deadline, ``connect_timeout``; then every step has the plain
        per-step ``timeout``. Raises ``RelayUnreachable`` (worth another try) or
        ``RelayMisconfigured`` (another try would fail the same way).
        """
        cfg = self.config
        context = _tls_context(cfg.cafile) if cfg.security != "none" else None
        client: _Smtp | _SmtpSsl = (
            _SmtpSsl(timeout=cfg.connect_timeout, context=context)
            if cfg.security == "tls"
            else _Smtp(timeout=cfg.connect_timeout)
        )
        client._host = cfg.host  # type: ignore[attr-defined]  # smtplib's SNI and name check
        client.opening_deadline = time.monotonic() + cfg.connect_timeout
        with self._lock:
            self._opening, self._aborted = client, False
        try:
            self._greet(client, context)
        except (OSError, smtplib.SMTPException) as err:
            failure = self._opening_failed(client.stage, err)
            # A relay that answered (AUTH refused, no STARTTLS) gets its QUIT; a silent or broken
            # one is closed at once, waiting for its goodbye would only cost more time.
            polite = isinstance(failure, RelayMisconfigured) and isinstance(
                err, smtplib.SMTPResponseException | smtplib.SMTPNotSupportedError
            )
            self._discard(client, polite=polite)
            raise failure from None
        except RelayMisconfigured:
            self._discard(client, polite=True)
            raise
        except BaseException:
            self._discard(client, polite=False)
            raise
        finally:
            with self._lock:
                self._opening = None
        client.opening_deadline = None
        client.timeout = cfg.timeout
        if client.sock is not None:
            client.sock.settimeout(cfg.timeout)
        with self._lock:
            aborted = self._aborted
            if not aborted:
                self._client = client
        if aborted:  # abort() came as the opening ended: the session is not wanted
            self._discard(client, polite=False)
            raise RelayUnreachable(
                f"cannot reach the SMTP relay {cfg.where}: stopped while connecting",
                reason="stopped while connecting",
            )

    def _greet(self, client: _Smtp | _SmtpSsl, context: ssl.SSLContext | None) -> None:
        """Every step of the opening, each under what is left of its deadline."""
        cfg = self.config
        code, text = client.connect(cfg.host, cfg.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, text)
        self._step(client, "EHLO")
        client.ehlo_or_helo_if_needed()
        if cfg.security == "starttls":
            self._step(client, "STARTTLS")
            client.starttls(context=context)
            self._step(client, "EHLO")
            client.ehlo_or_helo_if_needed()
        if cfg.username:
            if cfg.security == "none":
                raise RelayMisconfigured(
                    "refusing to send the SMTP password without TLS",
                    "set NEWSLETTER_SMTP_SECURITY=starttls or tls",
                    reason="refusing to send the password without TLS",
                )
            self._step(client, "AUTH")
            client.login(cfg.username, cfg.password)

    @staticmethod
    def _step(client: _Smtp | _SmtpSsl, stage: str) -> None:
        client.stage = stage
        remaining = client.opening_timeout(client.timeout)
        client.timeout = remaining  # the step's writes, reads and TLS handshake
        if client.sock is not None:
            client.sock.settimeout(remaining)

    def _discard(self, client: smtplib.SMTP, *, polite: bool) -> None:
        if polite:
            try:
                client.quit()
                return
            except (OSError, smtplib.SMTPException):
                pass
        with contextlib.suppress(OSError):
            client.close()

    def _opening_failed(
        self, stage: str, err: OSError | smtplib.SMTPException
    ) -> RelayUnreachable | RelayMisconfigured:
        """What went wrong while opening, as one error that says whether to try again."""
        cfg = self.config
        check = "check NEWSLETTER_SMTP_HOST, NEWSLETTER_SMTP_PORT and NEWSLETTER_SMTP_SECURITY"

        def unreachable(reason: str, hint: str = check) -> RelayUnreachable:
            reason = self._scrub(reason)
            return RelayUnreachable(
                f"cannot reach the SMTP relay {cfg.where}: {reason}", hint, reason=reason
            )

        def misconfigured(reason: str, hint: str) -> RelayMisconfigured:
            reason = self._scrub(reason)
            return RelayMisconfigured(f"SMTP relay {cfg.where}: {reason}", hint, reason=reason)

        within = f"within {cfg.connect_timeout:g} s"
        if isinstance(err, ssl.SSLCertVerificationError):
            return misconfigured(
                f"its certificate does not verify ({err.verify_message})",
                "fix the relay's certificate, or set NEWSLETTER_SMTP_HOST to a name it is "
                "issued for; verification is never turned off",
            )
        if isinstance(err, ssl.SSLError) and not isinstance(
            err, ssl.SSLEOFError | ssl.SSLZeroReturnError
        ):
            # The relay answered, but not in TLS (or in a TLS we cannot agree on): the same
            # answer every time, so it is a setting to change, not a relay to wait for.
            return misconfigured(
                f"TLS handshake failed ({err.reason or err})",
                "this port does not speak TLS from the start: set NEWSLETTER_SMTP_SECURITY="
                "starttls for port 587 or none for port 25, or use the relay's TLS port, "
                "usually 465"
                if stage == "TLS handshake" and cfg.security == "tls"
                else "check NEWSLETTER_SMTP_SECURITY and NEWSLETTER_SMTP_PORT against the relay",
            )
        if isinstance(err, smtplib.SMTPNotSupportedError):
            if stage == "STARTTLS":
                return misconfigured(
                    "STARTTLS not offered",
                    "set NEWSLETTER_SMTP_SECURITY=tls or none to match the relay, or use its "
                    "submission port, usually 587",
                )
            return misconfigured(
                "AUTH not offered",
                "leave NEWSLETTER_SMTP_USERNAME empty for this relay, or use its submission port",
            )
        if isinstance(err, TimeoutError):
            if stage == "connect":
                return unreachable(f"no connection {within}")
            if stage == "TLS handshake":
                return unreachable(f"no TLS handshake {within}")
            if stage == "greeting":
                hint = check
                if cfg.security != "tls":
                    hint += (
                        "; a port that expects TLS from the start, usually 465, needs "
                        "NEWSLETTER_SMTP_SECURITY=tls"
                    )
                return unreachable(f"no greeting {within}", hint)
            return unreachable(f"no reply to {stage} {within}")
        if isinstance(err, smtplib.SMTPResponseException):
            reply = _describe(err)
            if stage == "AUTH":
                reason = f"AUTH refused for {cfg.username!r} ({reply})"
                if err.smtp_code >= 500:
                    return misconfigured(
                        reason, "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
                    )
                return unreachable(reason, "the relay says to try again later")
            what = "greeting" if stage in ("connect", "greeting") else stage
            if err.smtp_code >= 500:
                return misconfigured(
                    f"{what} refused ({reply})",
                    "the relay does not accept this machine or this command: ask its "
                    "administrator, or check NEWSLETTER_SMTP_HOST and NEWSLETTER_SMTP_PORT",
                )
            return unreachable(f"{what} refused ({reply})", "the relay says to try again later")
        if isinstance(err, ConnectionRefusedError):
            return unreachable("connection refused")
        if isinstance(err, socket.gaierror):
            return unreachable(f"unknown host ({err.strerror})")
        if isinstance(err, smtplib.SMTPServerDisconnected | ConnectionError | ssl.SSLError):
            if stage in ("connect", "greeting"):
                return unreachable("connection closed before the greeting")
            return unreachable(f"connection closed during {stage}")
        if stage == "AUTH" and type(err) is smtplib.SMTPException:
            # smtplib's "No suitable authentication method found": none of ours is offered.
            return misconfigured(
                f"AUTH failed ({err})",
                "the relay offers no login method we speak (PLAIN, LOGIN, CRAM-MD5)",
            )
        if isinstance(err, OSError) and err.strerror:
            return unreachable(err.strerror[:1].lower() + err.strerror[1:])  # "no route to host"
        return unreachable(f"{stage} failed: {_describe(err)}")

    def _scrub(self, text: str) -> str:
        """``text`` without the password, whatever a relay may have echoed."""
        password = self.config.password
        return text.replace(password, "***") if password else text

    def send(self, sender: str, recipient: str, wire: bytes) -> None:
        """Hand one message to the relay.

        ``wire`` is the message as it goes on the wire: CRLF line ends, dot-stuffed, ending with
        CRLF (``MessageTemplate.personalise`` gives exactly that), so nothing is rewritten here.
        With PIPELINING (RFC 2920) MAIL, RCPT and DATA go in one write: two round trips a
        message instead of four.
        """
        if self._client is None:
            self.open()
        client = self._client
        assert client is not None
        try:
            envelope = _envelope(sender, recipient, smtputf8=self.smtputf8)
        except UnicodeEncodeError:
            raise AddressNeedsSmtpUtf8(
                f"{recipient}: a non-ASCII address needs SMTPUTF8, which the relay "
                f"{self.config.where} does not offer"
            ) from None
        try:
            self._transaction(client, envelope, wire)
        except ReplyTimeout as err:
            self._drop()
            raise RelayTimedOut(f"the relay did not answer in time: {err}") from None
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as err:
            self._drop() if isinstance(err, TimeoutError) else self.close()
            raise ConnectionLost(_describe(err)) from None

    def _transaction(
        self, client: smtplib.SMTP, envelope: tuple[bytes, bytes], wire: bytes
    ) -> None:
        mail_cmd, rcpt_cmd = envelope
        if client.does_esmtp and client.has_extn("pipelining"):
            client.send(mail_cmd + rcpt_cmd + b"DATA\r\n")
            replies = [client.getreply(), client.getreply(), client.getreply()]
        else:
            client.send(mail_cmd)
            replies = [client.getreply()]
            if replies[0][0] == 250:
                client.send(rcpt_cmd)
                replies.append(client.getreply())
                if replies[1][0] in (250, 251):
                    client.send(b"DATA\r\n")
                    replies.append(client.getreply())
        self._check_envelope(client, replies)
        client.send(wire + b".\r\n")
        try:
            code, text = client.getreply()
        except (ReplyTimeout, OSError, smtplib.SMTPServerDisconnected) as err:
            if isinstance(err, ReplyTimeout) or self._aborted:
                # The relay has every byte and said nothing: it may have queued the message.
                self._drop()
                raise UncertainDelivery(
                    f"no reply to the end of the message within {self.config.timeout:g} s"
                ) from None
            raise
        if code != 250:
            self._refused(code, text, stage="DATA")

    def _check_envelope(self, client: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> None:
        """Raise for the first refused step of MAIL / RCPT / DATA, leaving the session clean."""
        stages = ("MAIL", "RCPT", "DATA")
        for stage, (code, text) in zip(stages, replies, strict=False):
            expected = {"MAIL": (250,), "RCPT": (250, 251), "DATA": (354,)}[stage]
            if code in expected:
                continue
            if len(replies) == 3 and replies[2][0] == 354:
                # DATA was accepted although an earlier step failed: end it with no content.
                client.send(b".\r\n")
                client.getreply()
            self._refused(code, text, stage=stage)
        if len(replies) < 3:
            raise TemporaryFailure("the relay ended the transaction early")

    def _refused(self, code: int, text: bytes, *, stage: str) -> None:
        reply = f"{code} {' '.join(text.decode(errors='replace').split())}"
        if code == 421 or code == -1:
            self.close()
            raise ConnectionLost(reply)
        self._reset()
        if stage == "MAIL" and code >= 500:
            raise RelayRefusedSender(
                f"the relay {self.config.where} refused our sender address: {reply}",
                "check NEWSLETTER_FROM and that the relay accepts mail from it",
            )
        raise (PermanentFailure if code >= 500 else TemporaryFailure)(reply)

    def _reset(self) -> None:
        try:
            if self._client is not None:
                self._client.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def abort(self) -> None:
        """Cut the connection now, from any thread: a read blocked on the relay fails at once.

        A session still being opened is cut too (once its TCP connection exists).
        """
        with self._lock:
            client, self._aborted = self._client or self._opening, True
            sock = client.sock if client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        """Close without QUIT: the relay is not answering, waiting for its goodbye would hang."""
        with self._lock:
            self._aborted = True
        self.close()

    def forget(self) -> None:
        """Close this process's descriptor of the session, saying nothing to the relay: for a
        forked process holding a copy of a connection its parent goes on using."""
        with self._lock:
            client, self._client = self._client, None
        sock = client.sock if client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.detach())

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        if self._aborted:
            with contextlib.suppress(OSError):
                client.close()
            return
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            with contextlib.suppress(OSError):
                client.close()


def relay_offers_smtputf8(config: SmtpConfig) -> bool:
    """Whether the relay's EHLO offers SMTPUTF8: one session opened as a send opens it, then QUIT.

    Raises ``RelayUnreachable`` or ``RelayMisconfigured`` when no session opens.
    """
    connection = SmtpConnection(config)
    try:
        connection.open()
        return connection.smtputf8
    finally:
        connection.close()


class Smtputf8Gate:
    """Whether an address can be sent to, as far as SMTPUTF8 goes: the rule of add, import and
    sign-up. An ASCII address always can. One with a non-ASCII local part (``élodie@...``) can
    only through a relay that offers SMTPUTF8: the relay is asked (one EHLO, no MAIL) the first
    time such an address comes, and its answer is kept ``remember`` seconds. A relay that cannot
    be reached gives no answer: the address is refused with that reason, kept ``retry`` seconds
    (a burst of sign-ups does not open a connection each).
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        remember: float = 600.0,
        retry: float = 30.0,
        ask: Callable[[SmtpConfig], bool] = relay_offers_smtputf8,
    ) -> None:
        self.config = config
        self.remember = remember
        self.retry = retry
        self._ask = ask
        # (offered, or the reason no answer came; until when it holds: monotonic)
        self._known: tuple[bool | str, float] | None = None
        self._lock = threading.Lock()

    def __call__(self, address: str) -> str | None:
        """None when ``address`` can be sent to; otherwise why not, as one line."""
        if address.isascii():
            return None
        with self._lock:  # one question at a time: the others wait for its answer
            known = self._known
            if known is None or time.monotonic() > known[1]:
                try:
                    known = (self._ask(self.config), time.monotonic() + self.remember)
                except (RelayUnreachable, RelayMisconfigured) as err:
                    known = (err.reason, time.monotonic() + self.retry)
                self._known = known
        offered = known[0]
        if offered is True:
            return None
        if isinstance(offered, str):
            return (
                "a non-ASCII local part needs a relay that offers SMTPUTF8, and the relay "
                f"{self.config.address} cannot be asked now ({offered}); try again once it "
                "answers"
            )
        return (
            f"a non-ASCII local part needs SMTPUTF8, which the relay {self.config.address} "
            "does not offer (enable it on the relay, e.g. Postfix smtputf8_enable = yes, or "
            "use the ASCII address the owner also has)"
        )


def probe_relay(config: SmtpConfig) -> list[str]:
    """The relay's problems as `send` would meet them, one line each; empty when all is well.

    Opens one session as a send does (connect, greeting, EHLO, STARTTLS and AUTH when
    configured, under NEWSLETTER_SMTP_CONNECT_TIMEOUT), then QUIT: no MAIL, so nothing is sent
    and the relay counts no message. One attempt, no retry: `newsletter check` reports what it
    finds now. Each line names the relay ("relay smtp.example.com:587: no greeting within
    10 s (...)"), never the password.
    """
    problems: list[str] = []
    if config.username and config.security == "none":
        problems.append(
            f"relay {config.address}: refusing to send the password without TLS "
            "(set NEWSLETTER_SMTP_SECURITY=starttls or tls)"
        )
        # The rest still tells whether the relay can be reached at all.
        config = dataclasses.replace(config, username="", password="")
    connection = SmtpConnection(config)
    try:
        connection.open()
    except (RelayUnreachable, RelayMisconfigured) as err:
        fix = f" ({err.hint})" if err.hint else ""
        problems.append(f"relay {config.address}: {err.reason}{fix}")
    finally:
        connection.close()  # QUIT when the session opened
    return problems
