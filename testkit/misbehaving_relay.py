"""A relay that misbehaves in ways aiosmtpd cannot, run in its own process for the tests.

    python testkit/misbehaving_relay.py --port 2526 --out DIR --mode MODE

Modes:
- ``endless-reply``: answers MAIL with continuation lines ("250-...") every half second, forever;
- ``silent-after-data``: takes MAIL, RCPT, DATA and the whole message, then never answers the
  final "." (the relay that queued the message and hung);
- ``no-greeting``: accepts each connection, reads whatever comes and never says a word, not
  even the 220 greeting (a relay wedged before its banner, or a TLS-only port spoken to in
  plain text). Each accepted connection appends one line "connection" to DIR/connections.txt.

Each message whose final "." arrived is counted: one line "RCPT-ADDRESS" appended to
DIR/complete.txt, so a test can tell how many times a message went out whole.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path


class Relay:
    def __init__(self, mode: str, out: Path) -> None:
        self.mode = mode
        self.out = out

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # the peer left, or the relay is shutting down: nothing to report
            pass
        finally:
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "no-greeting":
            with (self.out / "connections.txt").open("a") as log:
                log.write("connection\n")
            while await reader.read(4096):
                pass  # never a byte back; the client gives up and closes
            return
        writer.write(b"220 misbehaving.test ESMTP\r\n")
        recipient = ""
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-misbehaving.test\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                if self.mode == "endless-reply":
                    while True:
                        writer.write(b"250-still thinking about it\r\n")
                        await writer.drain()
                        await asyncio.sleep(0.5)
                writer.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                recipient = line[8:].strip().strip(b"<>").decode()
                writer.write(b"250 OK\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                with (self.out / "complete.txt").open("a") as log:
                    log.write(recipient + "\n")
                await asyncio.sleep(3600)  # silent-after-data: never a word about it
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            elif verb == b"RSET" or verb == b"NOOP":
                writer.write(b"250 OK\r\n")
            else:
                writer.write(b"502 not here\r\n")
            await writer.drain()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--mode", choices=["endless-reply", "silent-after-data", "no-greeting"], required=True
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    relay = Relay(args.mode, args.out)
    server = await asyncio.start_server(relay.session, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
