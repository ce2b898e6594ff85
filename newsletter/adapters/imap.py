"""IMAP adapter: the mailbox that returned mail lands in, read with IMAPClient.

``NEWSLETTER_BOUNCE_IMAP_URL`` is ``imaps://user@host[:port]/FOLDER`` (config.py checked it: a
user, no password in it, plain ``imap://`` only on loopback); the password comes from
``NEWSLETTER_BOUNCE_IMAP_PASSWORD``. The certificate is always verified (the system's trust store;
tests give a CA file). Connecting, the TLS handshake and the greeting share one deadline
(``CONNECT_TIMEOUT``); each command after that has ``COMMAND_TIMEOUT``.

What is handled is marked, never deleted: the keyword ``$NewsletterHandled`` and ``\\Seen`` (a
person reading the mailbox sees it was dealt with). Nothing here ever sends STORE ``\\Deleted``,
EXPUNGE, CLOSE or MOVE. Which messages are still to handle depends on what the folder allows:
- the keyword is in the folder's FLAGS (it was set here before): those without it;
- keywords are allowed (``\\*`` in PERMANENTFLAGS) but ours was never set here: those unseen and
  without it. Until the first one is marked, a message a person already read is left alone, and
  so is one marked by a server that then refused the keyword (see below);
- keywords are not allowed: those unseen (``\\Seen`` alone marks them).
A server that refuses the keyword on STORE (dovecot's ``mail_max_keyword_length``, a keyword
quota) gets ``\\Seen`` alone from then on; the keyword never being in FLAGS, later polls look at
unseen messages only, so nothing is handled twice.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import unquote, urlsplit

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from newsletter.config import Settings
from newsletter.domain.errors import NewsletterError

HANDLED_KEYWORD = "$NewsletterHandled"
SEEN = b"\\Seen"
CONNECT_TIMEOUT = 10.0  # connect, TLS handshake and greeting
COMMAND_TIMEOUT = 30.0  # each command's reply (a 10 MB FETCH on a slow link included)


class MailboxUnreachable(NewsletterError):
    """No usable session with the mailbox this time: refused, silent, bad certificate, no folder."""


class MailboxLoginRefused(MailboxUnreachable):
    """The server refused our user name or password."""


@dataclass(frozen=True, slots=True)
class ImapConfig:
    host: str
    port: int
    user: str
    password: str
    folder: str
    tls: bool
    # Tests point this at a private CA; production leaves it None (the system's trust store).
    cafile: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    timeout: float = COMMAND_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings, *, cafile: str | None = None) -> ImapConfig:
        return cls.from_url(settings.bounce_imap_url, settings.bounce_imap_password, cafile=cafile)

    @classmethod
    def from_url(cls, url: str, password: str, *, cafile: str | None = None) -> ImapConfig:
        parts = urlsplit(url)
        tls = parts.scheme == "imaps"
        return cls(
            host=parts.hostname or "",
            port=parts.port or (993 if tls else 143),
            user=unquote(parts.username or ""),
            password=password,
            folder=unquote(parts.path.lstrip("/")) or "INBOX",
            tls=tls,
            cafile=cafile,
        )

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"ImapConfig({self.where!r})"

    @property
    def where(self) -> str:
        scheme = "imaps" if self.tls else "imap"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"


class ImapMailbox:
    """One session on the configured folder: ``with ImapMailbox(config) as box: ...``."""

    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self._client: IMAPClient | None = None
        self.keywords = True  # False: \Seen alone marks what was handled
        self.keyword_known = False  # our keyword is in the folder's FLAGS

    # -- opening ---------------------------------------------------------------------------------
    def __enter__(self) -> ImapMailbox:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect, log in and select the folder (read-write), or raise ``MailboxUnreachable``."""
        cfg = self.config
        stage = "connect"
        try:
            client = IMAPClient(
                cfg.host,
                port=cfg.port,
                ssl=cfg.tls,
                ssl_context=ssl.create_default_context(cafile=cfg.cafile) if cfg.tls else None,
                timeout=SocketTimeout(connect=cfg.connect_timeout, read=cfg.timeout),
            )
        except Exception as err:
            raise self._unreachable(stage, err) from None
        self._client = client
        try:
            stage = "login"
            client.login(cfg.user, cfg.password)
            stage = "select"
            selected = client.select_folder(cfg.folder)
        except LoginError as err:
            self.close()
            raise MailboxLoginRefused(
                f"mailbox {cfg.where}: login refused ({self._reply(err)})",
                "check the user in NEWSLETTER_BOUNCE_IMAP_URL and NEWSLETTER_BOUNCE_IMAP_PASSWORD",
            ) from None
        except Exception as err:
            self.close()
            raise self._unreachable(stage, err) from None
        keyword = HANDLED_KEYWORD.encode()
        permanent = selected.get(b"PERMANENTFLAGS", ())
        self.keyword_known = keyword in selected.get(b"FLAGS", ()) or keyword in permanent
        self.keywords = b"\\*" in permanent or self.keyword_known

    def _unreachable(self, stage: str, err: BaseException) -> MailboxUnreachable:
        cfg = self.config
        hint = "check NEWSLETTER_BOUNCE_IMAP_URL (host, port, imaps) and the server"
        if isinstance(err, ssl.SSLCertVerificationError):
            reason = f"its certificate does not verify ({err.verify_message})"
            hint = (
                "fix the server's certificate, or use a host name it is issued for; "
                "verification is never turned off"
            )
        elif isinstance(err, ssl.SSLError):
            reason = f"TLS handshake failed ({err.reason or err})"
            hint = "the port must speak TLS from the start (imaps, usually 993)"
        elif isinstance(err, TimeoutError | socket.timeout):
            reason = (
                f"no answer within {cfg.connect_timeout:g} s"
                if stage == "connect"
                else f"no reply to {stage.upper()} within {cfg.timeout:g} s"
            )
        elif isinstance(err, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(err, socket.gaierror):
            reason = f"unknown host ({err.strerror})"
        elif stage == "select" and isinstance(err, IMAPClientError):
            reason = f"cannot open folder {cfg.folder!r} ({self._reply(err)})"
            hint = "check the folder at the end of NEWSLETTER_BOUNCE_IMAP_URL (INBOX by default)"
        elif isinstance(err, OSError) and err.strerror:
            reason = err.strerror[:1].lower() + err.strerror[1:]
        else:
            reason = f"{stage} failed ({self._reply(err)})"
        return MailboxUnreachable(f"cannot reach the mailbox {cfg.where}: {reason}", hint)

    def _reply(self, err: BaseException) -> str:
        text = " ".join(str(err).split()) or type(err).__name__
        if self.config.password:
            text = text.replace(self.config.password, "***")
        return text[:200]

    # -- the messages ----------------------------------------------------------------------------
    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise MailboxUnreachable(f"mailbox {self.config.where}: not connected")
        return self._client

    def unhandled(self) -> list[int]:
        """The UIDs not marked handled yet, oldest first (see the module's docstring)."""
        criteria: list[str] = ["NOT", "KEYWORD", HANDLED_KEYWORD]
        if not self.keywords:
            criteria = ["UNSEEN"]
        elif not self.keyword_known:
            criteria = ["UNSEEN", *criteria]
        return sorted(self._command("SEARCH", lambda: self.client.search(criteria)))

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """Each message's size in bytes (RFC822.SIZE), read before any content is fetched."""
        if not uids:
            return {}
        fetched = self._command("FETCH", lambda: self.client.fetch(uids, ["RFC822.SIZE"]))
        return {uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in fetched.items()}

    def read(self, uid: int) -> bytes | None:
        """The raw message (BODY.PEEK[]: reading it does not set \\Seen); None if it is gone."""
        fetched = self._command("FETCH", lambda: self.client.fetch([uid], ["BODY.PEEK[]"]))
        data = fetched.get(uid)
        if data is None:
            return None
        raw = data.get(b"BODY[]")
        return bytes(raw) if raw is not None else None

    def mark_handled(self, uid: int) -> None:
        """Flag the message handled: the keyword and \\Seen, or \\Seen alone (never deleted)."""
        if self.keywords:
            try:
                self.client.add_flags([uid], [HANDLED_KEYWORD.encode(), SEEN])
                self.keyword_known = True
                return
            except IMAPClientError as err:
                if not _refused(err):
                    raise self._lost("STORE", err) from None
                # The server refuses the keyword (too long, too many keywords): \Seen from now on.
                self.keywords = False
            except (OSError, TimeoutError) as err:
                raise self._lost("STORE", err) from None
        self._command("STORE", lambda: self.client.add_flags([uid], [SEEN]))

    def _command(self, name: str, call):  # type: ignore[no-untyped-def]
        try:
            return call()
        except (IMAPClientError, OSError, TimeoutError) as err:
            raise self._lost(name, err) from None

    def _lost(self, name: str, err: BaseException) -> MailboxUnreachable:
        if isinstance(err, TimeoutError | socket.timeout):
            reason = f"no reply to {name} within {self.config.timeout:g} s"
        else:
            reason = f"{name} failed ({self._reply(err)})"
        self.close(polite=False)
        return MailboxUnreachable(f"mailbox {self.config.where}: {reason}")

    def close(self, *, polite: bool = True) -> None:
        """LOGOUT (which never expunges, unlike CLOSE), or just the socket when it broke."""
        client, self._client = self._client, None
        if client is None:
            return
        if polite:
            try:
                client.logout()
                return
            except Exception:  # a broken session still needs its socket closed
                pass
        with contextlib.suppress(Exception):  # already closed
            client.shutdown()


def _refused(err: IMAPClientError) -> bool:
    """A tagged NO or BAD (the server said no), as opposed to a broken connection."""
    from imapclient.exceptions import IMAPClientAbortError

    return not isinstance(err, IMAPClientAbortError)
