"""A tiny authoritative DNS server over UDP for the tests (there is no internet here): it serves
the TXT records of a dict, answers NXDOMAIN for any other name, and can be told to stay silent
(a DNS that does not answer). It runs in a thread of the test process, on a free loopback port;
point `newsletter` at it with NEWSLETTER_TEST_DNS_SERVER=127.0.0.1:PORT (``env_value``).
Packets are read and written with dnslib.

Named dns_server, not dns: the scripts of testkit/ run with this folder first on sys.path, where
a dns.py would hide dnspython."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord


class DnsServer:
    def __init__(self, records: dict[str, list[str]] | None = None) -> None:
        #: name -> the TXT records there; change it between two look-ups as needed.
        self.records: dict[str, list[str]] = dict(records or {})
        #: True: read every question and answer none.
        self.silent = False
        #: Every name asked, in order.
        self.asked: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def env_value(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, client = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                request = DNSRecord.parse(packet)
            except Exception:  # not a DNS question: ignored, as a server would
                continue
            name = str(request.q.qname).rstrip(".").lower()
            self.asked.append(name)
            if self.silent:
                continue
            self._socket.sendto(self._answer(request, name).pack(), client)

    def _answer(self, request: DNSRecord, name: str) -> DNSRecord:
        reply = request.reply()  # authoritative, the question echoed
        found = {key.rstrip(".").lower(): value for key, value in self.records.items()}
        if name not in found:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for text in found[name]:
                data = text.encode("utf-8")
                # A TXT string holds at most 255 bytes: longer records are several strings.
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


@contextmanager
def dns_server(records: dict[str, list[str]] | None = None) -> Iterator[DnsServer]:
    server = DnsServer(records).start()
    try:
        yield server
    finally:
        server.stop()
