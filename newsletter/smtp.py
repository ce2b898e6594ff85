"""SMTP adapter: one reusable relay connection, with every failure sorted into what to do next.

``SmtpConnection.send()`` either returns (the relay took the message) or raises one of:
- ``PermanentFailure``: a 5xx for this recipient; never retry it, the address bounced;
- ``TemporaryFailure``: a 4xx for this recipient; retry later in the same run;
- ``ConnectionLost``: the connection broke (421, reset, timeout); reconnect and retry;
- ``RelayRefusedSender``: the relay refuses our From address: a configuration problem, stop.
Certificates are always verified (``ssl.create_default_context()``) and AUTH is only sent over TLS.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from dataclasses import dataclass

from newsletter.config import Settings
from newsletter.errors import NewsletterError


class SmtpFailure(NewsletterError):
    """Base of the per-message outcomes below."""


class PermanentFailure(SmtpFailure):
    pass


class TemporaryFailure(SmtpFailure):
    pass


class ConnectionLost(SmtpFailure):
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

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.cafile)
        try:
            if cfg.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=context
                )
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
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
        self._client = client
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

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Hand one message to the relay. ``data`` must already use CRLF line ends."""
        if self._client is None:
            self.open()
        client = self._client
        assert client is not None
        try:
            client.sendmail(sender, [recipient], data)
        except smtplib.SMTPRecipientsRefused as err:
            code, reply = err.recipients.get(recipient, (550, b"refused"))
            text = f"{code} {' '.join(reply.decode(errors='replace').split())}"
            if code == 421:
                self.close()
                raise ConnectionLost(text) from None
            self._reset()
            raise (PermanentFailure if code >= 500 else TemporaryFailure)(text) from None
        except smtplib.SMTPSenderRefused as err:
            self._after_transaction_error(err)
            if err.smtp_code < 500:
                raise TemporaryFailure(_describe(err)) from None
            raise RelayRefusedSender(
                f"the relay {self.config.where} refused the sender {sender}: {_describe(err)}",
                "check NEWSLETTER_FROM and that the relay accepts mail from it",
            ) from None
        except smtplib.SMTPDataError as err:
            self._after_transaction_error(err)
            outcome = PermanentFailure if err.smtp_code >= 500 else TemporaryFailure
            raise outcome(_describe(err)) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as err:
            self.close()
            raise ConnectionLost(_describe(err)) from None
        except smtplib.SMTPResponseException as err:
            self._after_transaction_error(err)
            raise TemporaryFailure(_describe(err)) from None

    def _after_transaction_error(self, err: smtplib.SMTPResponseException) -> None:
        """421 means the relay is closing the session: make the caller reconnect."""
        if err.smtp_code == 421:
            self.close()
            raise ConnectionLost(_describe(err)) from None
        self._reset()

    def _reset(self) -> None:
        try:
            if self._client is not None:
                self._client.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            with contextlib.suppress(OSError):
                client.close()
