"""TXT look-ups for ``newsletter check`` (SPF, DKIM, DMARC), with dnspython, bounded in time.

A DNS that does not answer must cost ``check`` a few seconds, not a hang: each look-up has
``LOOKUP_SECONDS`` in all, and the first one that gets no answer raises ``DnsUnanswered`` so
that the caller stops asking.
"""

from __future__ import annotations

import os

import dns.exception
import dns.resolver

LOOKUP_SECONDS = 3.0
# Private and undocumented: HOST:PORT of the DNS server to ask instead of the system's. The
# tests point it at testkit/dns.py (there is no internet there); no command sets it.
_TEST_DNS_SERVER_ENV = "NEWSLETTER_TEST_DNS_SERVER"


class DnsUnanswered(Exception):
    """No DNS server answered the question (time-out, refused, SERVFAIL)."""


class TxtResolver:
    """The TXT records of a name, from the system's resolver (or the tests' server)."""

    def __init__(self, lifetime: float = LOOKUP_SECONDS) -> None:
        self._resolver: dns.resolver.Resolver | None
        override = os.environ.get(_TEST_DNS_SERVER_ENV, "")
        try:
            if override:
                host, _, port = override.rpartition(":")
                self._resolver = dns.resolver.Resolver(configure=False)
                self._resolver.nameservers = [host]
                self._resolver.port = int(port)
            else:
                self._resolver = dns.resolver.Resolver()
        except (dns.resolver.NoResolverConfiguration, ValueError, OSError):
            self._resolver = None
        if self._resolver is not None:
            self._resolver.timeout = self._resolver.lifetime = lifetime
        self.lifetime = lifetime

    def txt(self, name: str) -> list[str]:
        """Each TXT record at ``name``, its strings joined; [] when there is none."""
        if self._resolver is None:
            raise DnsUnanswered("no DNS resolver is configured on this machine")
        try:
            answer = self._resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsUnanswered(f"no DNS answer within {self.lifetime:g} s") from None
        except dns.resolver.NoNameservers:
            raise DnsUnanswered("no DNS server answered (refused or failed)") from None
        except dns.exception.DNSException as err:
            raise DnsUnanswered(f"the DNS look-up failed: {type(err).__name__}") from None
        # A record longer than 255 bytes is split into strings; they join without a space.
        return [
            b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
            for rdata in answer
        ]
