"""A real SMTP server for the tests: aiosmtpd, run in its own process, with optional faults.

    python testkit/smtp_server.py --port 2525 --out DIR [--reject-rcpt SUBSTR ...]
        [--defer-fraction F] [--drop-every N] [--delay SECONDS] [--reset-every N]
        [--tls-cert CERT --tls-key KEY [--implicit-tls]] [--auth USER:PASSWORD]
        [--max-connections N]

Every accepted message is written as DIR/NNNNNN.eml (the bytes as received) and one JSON line in
DIR/log.jsonl with the envelope and two wall-clock times: ``mail_at`` (its MAIL command arrived,
the message started) and ``data_at`` (its content was kept). Faults, for the delivery tests:
- ``--reject-rcpt S``: 550 at RCPT for addresses containing S (a hard bounce);
- ``--defer-fraction F``: 451 at RCPT the first time for about F of the addresses (chosen by a hash
  of the address, so the choice is repeatable), accepted when retried;
- ``--drop-every N``: after every N accepted messages, answer the next MAIL with 421 and close
  the connection (nothing of that transaction is kept);
- ``--delay S``: wait S seconds before answering DATA (a slow relay);
- ``--reset-every N``: every Nth message, reset the connection (TCP RST) in the middle of DATA,
  after the content arrived but before it is kept or answered (nothing of it is kept);
- ``--tls-cert C --tls-key K``: offer STARTTLS with that certificate and require it before MAIL;
  with ``--implicit-tls``, speak TLS from the first byte instead (port 465 style, no STARTTLS);
- ``--max-connections N``: greet at most N sessions at a time; one more gets "421 too many
  connections" instead of the 220 greeting, and is closed (as many relays limit each client);
- ``--auth USER:PASSWORD``: offer AUTH (PLAIN, LOGIN; over TLS only, as aiosmtpd requires) and
  accept that login alone; a wrong one gets 535.

Every session's commands that matter to the relay probe go to DIR/commands.log, one line each:
"AUTH ok USER", "AUTH refused USER", "MAIL FROM-ADDRESS" (whether or not it was accepted), "QUIT",
so a test can tell that a probe logged in and left without ever starting a transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import ssl
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


class RecordingHandler:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.args = args
        self.count = 0
        self.deferred: set[str] = set()
        self.dropped_at = -1
        self.data_seen = 0
        self.lock = threading.Lock()
        self.log = (out / "log.jsonl").open("a", encoding="utf-8")
        self.commands = (out / "commands.log").open("a", encoding="utf-8")
        self.sessions = 0  # sessions greeted and still open (for --max-connections)

    def note(self, line: str) -> None:
        with self.lock:
            self.commands.write(line + "\n")
            self.commands.flush()

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.note("QUIT")
        return "221 Bye"

    def _defer(self, address: str) -> bool:
        if self.args.defer_fraction <= 0 or address in self.deferred:
            return False
        bucket = int(hashlib.sha256(address.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if bucket < self.args.defer_fraction:
            self.deferred.add(address)
            return True
        return False

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.note(f"MAIL {address}")
        every = self.args.drop_every
        with self.lock:
            drop = (
                bool(every)
                and self.count > 0
                and self.count % every == 0
                and self.count != self.dropped_at
            )
            if drop:
                self.dropped_at = self.count
        if drop:
            # An overloaded relay: refuse the next transaction and hang up.
            asyncio.get_running_loop().call_later(0.01, server.transport.close)  # type: ignore[union-attr]
            return "421 4.3.2 Service busy, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_at = time.time()  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if any(s in address for s in self.args.reject_rcpt):
            return "550 5.1.1 No such user here"
        if self._defer(address):
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        every = self.args.reset_every
        if every:
            with self.lock:
                self.data_seen += 1
                reset = self.data_seen % every == 0
            if reset:
                # A connection reset mid-DATA: no reply, nothing kept.
                server.transport.abort()  # type: ignore[union-attr]
                return "451 4.3.0 never seen by the client"
        if self.args.delay:
            await asyncio.sleep(self.args.delay)
        with self.lock:
            self.count += 1
            number = self.count
        name = f"{number:06d}.eml"
        tmp = self.out / f".{name}.tmp"
        tmp.write_bytes(envelope.original_content or b"")
        os.replace(tmp, self.out / name)
        self.log.write(
            json.dumps(
                {
                    "file": name,
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "smtputf8": envelope.smtp_utf8,
                    "mail_at": getattr(envelope, "mail_at", None),
                    "data_at": time.time(),
                }
            )
            + "\n"
        )
        self.log.flush()
        return "250 OK"


class LimitedSMTP(SMTP):
    """aiosmtpd's session, refused with 421 before the greeting beyond --max-connections."""

    async def _handle_client(self) -> None:
        handler: RecordingHandler = self.event_handler
        limit = handler.args.max_connections
        with handler.lock:
            refused = bool(limit) and handler.sessions >= limit
            if not refused:
                handler.sessions += 1
        if refused:
            await self.push("421 4.7.0 Too many connections from you, try again later")
            assert self.transport is not None
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            with handler.lock:
                handler.sessions -= 1


class LimitedController(Controller):
    def factory(self) -> SMTP:
        return LimitedSMTP(self.handler, **self.SMTP_kwargs)


class Authenticator:
    """Accepts the one USER:PASSWORD given with --auth; notes each attempt in commands.log."""

    def __init__(self, handler: RecordingHandler, credentials: str) -> None:
        self.handler = handler
        user, _, password = credentials.partition(":")
        self.expected = LoginPassword(user.encode(), password.encode())

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        ok = auth_data == self.expected
        self.handler.note(f"AUTH {'ok' if ok else 'refused'} {login}")
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 when refused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reject-rcpt", action="append", default=[])
    parser.add_argument("--defer-fraction", type=float, default=0.0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--reset-every", type=int, default=0)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--max-connections", type=int, default=0)
    # aiosmtpd's Controller offers SMTPUTF8 (RFC 6531) unless told not to.
    parser.add_argument("--no-smtputf8", action="store_true", help="do not offer SMTPUTF8")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    handler = RecordingHandler(args.out, args)
    options: dict[str, object] = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.implicit_tls:
            options = {"ssl_context": context}
        else:
            options = {"tls_context": context, "require_starttls": True}
    if args.auth:
        options["authenticator"] = Authenticator(handler, args.auth)
    options["enable_SMTPUTF8"] = not args.no_smtputf8
    controller = LimitedController(handler, hostname=args.host, port=args.port, **options)
    controller.start()
    print(f"listening on {args.host}:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
