"""SMTP adapter: one reusable relay connection, with every failure sorted into what to do next.

``SmtpConnection.send()`` either returns (the relay took the message) or raises one of:
- ``PermanentFailure``: a 5xx for this recipient; never retry it, the address bounced;
- ``TemporaryFailure``: a 4xx for this recipient; retry later in the same run;
- ``ConnectionLost``: the connection broke (421, reset, timeout); reconnect and retry;
- ``UncertainDelivery``: the whole message went out but no reply to its final "." came within
  the timeout: the relay may have queued it, so it is never retransmitted in the same run;
- ``RelayRefusedSender``: the relay refuses our From address: a configuration problem, stop.
Every reply is read under one deadline (``NEWSLETTER_SMTP_TIMEOUT``) however many continuation
lines the relay sends, and ``SmtpConnection.abort()`` wakes a read from another thread, so no
relay can hold a worker longer than the timeout. Certificates are always verified
(``ssl.create_default_context()``) and AUTH is only sent over TLS.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from newsletter.config import Settings
from newsletter.domain.errors import NewsletterError


class SmtpFailure(NewsletterError):
    """Base of the per-message outcomes below."""


class PermanentFailure(SmtpFailure):
    pass


class AddressNeedsSmtpUtf8(PermanentFailure):
    """An address with a non-ASCII local part: we never tried it, so it did not bounce."""


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

    def getreply(self) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout
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
    pass


class _SmtpSsl(_DeadlineReplies, smtplib.SMTP_SSL):
    pass


class RelayUnreachable(NewsletterError):
    """No connection to the relay could be made at all."""


class RelayRefusedSender(NewsletterError):
    """The relay rejects the sender address or our login: every message would fail the same way."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # none | starttls | tls
    username: str = ""
    password: str = ""
    timeout: float = 30.0
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
        )

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


def _envelope(sender: str, recipient: str) -> tuple[bytes, bytes]:
    """The MAIL and RCPT command lines; addresses were validated, CR/LF cannot reach here."""
    for address in (sender, recipient):
        if any(c in address for c in "\r\n<>"):
            raise UnicodeEncodeError("ascii", address, 0, 1, "not a plain address")
    return (
        f"MAIL FROM:<{sender}>\r\n".encode("ascii"),
        f"RCPT TO:<{recipient}>\r\n".encode("ascii"),
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


class SmtpConnection:
    """One session with the relay, opened lazily and reused for many messages."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()  # abort() runs in another thread than the sends
        self._aborted = False

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.cafile)
        try:
            if cfg.security == "tls":
                client: smtplib.SMTP = _SmtpSsl(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=context
                )
            else:
                client = _Smtp(cfg.host, cfg.port, timeout=cfg.timeout)
            client.ehlo()
            if cfg.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
        except smtplib.SMTPNotSupportedError:
            raise RelayRefusedSender(
                f"the relay {cfg.where} does not offer STARTTLS",
                "set NEWSLETTER_SMTP_SECURITY=tls or none to match it",
            ) from None
        except ssl.SSLCertVerificationError as err:
            raise RelayRefusedSender(
                f"the relay {cfg.where} presented a certificate that does not verify: {err.verify_message}",
                "fix the relay's certificate; verification is never turned off",
            ) from None
        except (OSError, smtplib.SMTPException) as err:
            raise RelayUnreachable(
                f"cannot reach the SMTP relay {cfg.where}: {_describe(err)}",
                "check NEWSLETTER_SMTP_HOST/_PORT/_SECURITY; nothing was lost, run send again",
            ) from None
        with self._lock:
            self._client, self._aborted = client, False
        self._login()

    def _login(self) -> None:
        cfg, client = self.config, self._client
        if not cfg.username or client is None:
            return
        if cfg.security == "none":
            self.close()
            raise RelayRefusedSender(
                "refusing to send the SMTP password without TLS",
                "set NEWSLETTER_SMTP_SECURITY=starttls or tls",
            )
        try:
            client.login(cfg.username, cfg.password)
        except smtplib.SMTPAuthenticationError as err:
            self.close()
            raise RelayRefusedSender(
                f"the relay {cfg.where} refused the login for {cfg.username!r}: {_describe(err)}",
                "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD",
            ) from None
        except (OSError, smtplib.SMTPException) as err:
            self.close()
            raise RelayUnreachable(
                f"login to {cfg.where} failed: {_describe(err)}", "run send again"
            ) from None

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
            envelope = _envelope(sender, recipient)
        except UnicodeEncodeError:
            raise AddressNeedsSmtpUtf8(f"{recipient}: a non-ASCII address needs SMTPUTF8") from None
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
        """Cut the connection now, from any thread: a read blocked on the relay fails at once."""
        with self._lock:
            client, self._aborted = self._client, True
            sock = client.sock if client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        """Close without QUIT: the relay is not answering, waiting for its goodbye would hang."""
        with self._lock:
            self._aborted = True
        self.close()

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
