"""``newsletter check``: everything the daily send needs, looked at in one pass, changing nothing.

Each check yields ``Finding`` values: a problem (the send would fail or go out wrong), a warning
(worth knowing, the send still works) or ok. The settings themselves are checked by the command
(``config.load_settings``) before these run, since every check here needs valid settings.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from newsletter.adapters.dkim import dns_record, public_key_data
from newsletter.adapters.dnsrecords import DnsUnanswered, TxtResolver
from newsletter.adapters.httpprobe import probe_url
from newsletter.adapters.message import Sender, SenderError
from newsletter.adapters.smtp import SmtpConfig, probe_relay
from newsletter.adapters.sources import SourceError, display_name, read_sources
from newsletter.adapters.store import inspect_database
from newsletter.config import ConfigError, Settings, load_dkim_key
from newsletter.domain.addresses import InvalidAddress, normalise_address
from newsletter.domain.edition import edition_window
from newsletter.domain.urls import redact_url


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    subject: str  # what was looked at: "database", "relay", "source <name>" ...
    text: str
    #: A DNS record that would fix it, ``NAME TXT "value"`` (printed on a line of its own).
    publish: str = ""

    def __str__(self) -> str:
        return f"{self.level.value + ':':<9}{self.subject}: {self.text}"


def check_everything(settings: Settings, now: datetime | None = None) -> Iterator[Finding]:
    """Every check after the settings: database, relay, sources, editors, base URL."""
    yield check_database(settings)
    yield from check_relay(settings)
    yield from check_sources(settings, now or datetime.now(UTC))
    yield from check_editors(settings)
    yield from check_identity(settings)
    yield check_tracking(settings)
    yield check_sending(settings)
    yield check_base_url(settings)
    yield from check_dns(settings)


def check_database(settings: Settings) -> Finding:
    where = redact_url(settings.database_url)
    health = inspect_database(settings.database_url)
    if health.problem:
        return Finding(Level.PROBLEM, "database", f"{where}: {health.problem}")
    if health.version is None or health.version == 0:
        return Finding(Level.OK, "database", f"{where}: {health.note}")
    state = f"{where}: schema version {health.version}, writable"
    return Finding(Level.OK, "database", f"{state} ({health.note})" if health.note else state)


def check_relay(settings: Settings) -> Iterator[Finding]:
    config = SmtpConfig.from_settings(settings)
    problems = probe_relay(config)
    for problem in problems:
        yield Finding(Level.PROBLEM, "relay", problem.removeprefix("relay "))
    if not problems:
        steps = ["connected", "EHLO"]
        if config.security == "starttls":
            steps.append("STARTTLS")
        if config.security == "tls":
            steps.insert(1, "TLS")
        if config.username:
            steps.append(f"AUTH as {config.username}")
        yield Finding(Level.OK, "relay", f"{config.where}: {', '.join(steps)} (no mail sent)")


def check_sources(settings: Settings, now: datetime) -> Iterator[Finding]:
    """Each source read on its own, and how many of its articles the coming edition gets."""
    day = settings.next_edition_date(now)
    window = edition_window(day, settings.send_time, settings.timezone)
    for spec in settings.sources:
        name = f"source {display_name(spec)}"
        try:
            report = read_sources([spec], timeout=settings.feed_timeout)
        except SourceError as err:
            reason = err.failures[0][1] if err.failures else str(err)
            yield Finding(Level.PROBLEM, name, f"cannot be read: {reason}")
            continue
        count = sum(article.published in window for article in report.articles)
        start, end = (moment.astimezone(settings.timezone) for moment in (window.start, window.end))
        articles = "1 article" if count == 1 else f"{count} articles"
        yield Finding(
            Level.OK,
            name,
            f"{len(report.articles)} read; {articles} in the edition of {day.isoformat()} "
            f"(published {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}, {settings.timezone.key})",
        )
        for warning in report.warnings:
            yield Finding(Level.WARNING, name, warning)


def check_editors(settings: Settings) -> Iterator[Finding]:
    if not settings.editors:
        yield Finding(
            Level.OK, "editors", "none set (NEWSLETTER_EDITORS): no test send before each edition"
        )
        return
    bad = 0
    for address in settings.editors:
        try:
            normalise_address(address)
        except InvalidAddress as err:
            bad += 1
            yield Finding(Level.PROBLEM, "editors", f"NEWSLETTER_EDITORS: {err}")
    if not bad:
        count = len(settings.editors)
        yield Finding(
            Level.OK,
            "editors",
            f"{count} address{'es' if count != 1 else ''}, each gets the edition "
            f"{settings.preview_lead_minutes} minutes before the send",
        )


def check_identity(settings: Settings) -> Iterator[Finding]:
    """Who publishes the letter: Gmail and Yahoo's sender rules, and French and Moroccan rules on
    commercial email, expect the sender identified in every message. A warning: the mail still
    goes out, but the footer lacks what readers and the law look for."""
    missing = [
        name
        for name, value in (
            ("NEWSLETTER_PUBLISHER", settings.publisher),
            ("NEWSLETTER_POSTAL_ADDRESS", settings.postal_address),
        )
        if not value
    ]
    if missing:
        yield Finding(
            Level.WARNING,
            "publisher",
            f"{' and '.join(missing)} not set: every mail's footer should name its publisher "
            "and a postal address (Gmail and Yahoo sender rules, consumer law)",
        )
    else:
        yield Finding(
            Level.OK, "publisher", f"{settings.publisher}, {settings.postal_address} (in each mail)"
        )
    if settings.archive == "off":
        yield Finding(Level.OK, "archive", "off: no web version link in the mails")
    else:
        yield Finding(
            Level.OK,
            "archive",
            f"{settings.archive}: each mail links to its web version under {settings.base_url}"
            "/archive/",
        )


def check_tracking(settings: Settings) -> Finding:
    """Whether clicks and opens are counted (issue 15): one line either way, so that an operator
    sees it is on, and that the redirects then depend on the web app."""
    if not (settings.track_clicks or settings.track_opens):
        return Finding(Level.OK, "tracking", "off: article links go straight to the site, no pixel")
    counted = " and ".join(
        what
        for what, on in (("clicks", settings.track_clicks), ("opens", settings.track_opens))
        if on
    )
    paths = " and ".join(
        f"{settings.base_url}{path}"
        for path, on in (("/c/", settings.track_clicks), ("/o/", settings.track_opens))
        if on
    )
    return Finding(
        Level.OK,
        "tracking",
        f"{counted} counted: {paths} must be served by `newsletter serve` "
        "(readers can turn it off on their preferences page)",
    )


def check_sending(settings: Settings) -> Finding:
    """How a send uses the relay and the machine (issue 16): connections, processes, the cap."""
    connections, processes = settings.smtp_connections, settings.send_processes
    cap = f", at most {settings.smtp_rate:g} messages a second" if settings.smtp_rate else ""
    if processes == 1:
        return Finding(Level.OK, "sending", f"{connections} connection(s) in one process{cap}")
    cores = os.cpu_count() or 1
    text = (
        f"{connections} connections over {processes} processes{cap} (the daemon sends with one "
        "process)"
    )
    if processes > cores:
        return Finding(
            Level.WARNING,
            "sending",
            f"{text}; this machine has {cores} core(s): more sender processes than cores only "
            "adds switching, lower NEWSLETTER_SEND_PROCESSES",
        )
    return Finding(Level.OK, "sending", text)


def check_base_url(settings: Settings) -> Finding:
    if not settings.base_url:
        return Finding(Level.PROBLEM, "base URL", "NEWSLETTER_BASE_URL is not set")
    url = f"{settings.base_url}/healthz"
    failure = probe_url(url)
    if failure:
        # A warning, not a problem: on a first set-up `newsletter serve` may not run yet. The
        # mail's unsubscribe links lead nowhere until it does.
        return Finding(
            Level.WARNING,
            "base URL",
            f"{url}: {failure} (the links in each mail lead there: run `newsletter serve` "
            "behind it)",
        )
    return Finding(Level.OK, "base URL", f"{settings.base_url}: the web app answers")


# -- DNS: SPF, DKIM, DMARC of the From domain --------------------------------------------------


def check_dns(settings: Settings, resolver: TxtResolver | None = None) -> Iterator[Finding]:
    """The records receivers look up for the From domain; each one missing comes with its fix.

    Gmail and Yahoo want SPF, DKIM and an aligned DMARC record from a bulk sender. The first
    look-up that gets no answer stops the rest: a warning, since the send itself needs no DNS.
    """
    try:
        domain = Sender.parse(settings.from_address).domain
    except SenderError:
        return  # NEWSLETTER_FROM is reported with the settings
    resolver = resolver or TxtResolver()
    # SPF is checked at the envelope sender's domain: NEWSLETTER_BOUNCE_ADDRESS's when it is
    # elsewhere (its own record then), else the From domain's.
    envelope = settings.bounce_address.rpartition("@")[2].strip(" <>").lower()
    try:
        yield _check_spf(settings, domain, resolver)
        if envelope and envelope != domain:
            yield _check_spf(settings, envelope, resolver)
        yield _check_dkim(settings, domain, resolver)
        yield _check_dmarc(domain, resolver)
    except DnsUnanswered as err:
        yield Finding(
            Level.WARNING,
            "DNS",
            f"{err}: the SPF, DKIM and DMARC records of {domain} were not all checked"
            " (run check again when the DNS answers)",
        )


def _txt(name: str, value: str) -> str:
    return f'{name} TXT "{value}"'


def _check_spf(settings: Settings, domain: str, resolver: TxtResolver) -> Finding:
    records = [r for r in resolver.txt(domain) if r.lower().startswith("v=spf1")]
    if len(records) == 1:
        return Finding(Level.OK, "SPF", f"{domain}: {records[0]}")
    if records:
        return Finding(
            Level.PROBLEM,
            "SPF",
            f"{domain} has {len(records)} SPF records: receivers then ignore them all"
            " (RFC 7208 4.5); merge them into one",
        )
    return Finding(
        Level.PROBLEM,
        "SPF",
        f"{domain} has no SPF record (a TXT record starting v=spf1): receivers cannot tell the"
        " relay may send for it (the record below names the relay; add any other host that"
        " sends for the domain, or the include: your mail provider documents)",
        publish=_txt(domain, f"v=spf1 {_spf_mechanism(settings.smtp_host)} ~all"),
    )


def _spf_mechanism(host: str) -> str:
    """Who sends, as SPF names it: the relay's address or name; the domain's MX for a local one."""
    if not host or host.lower() == "localhost":
        return "mx a"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"a:{host.lower()}"
    if address.is_loopback or address.is_private:
        return "mx a"  # the relay runs here: this host is the domain's mail host
    return f"ip{address.version}:{address}"


def _check_dkim(settings: Settings, domain: str, resolver: TxtResolver) -> Finding:
    if not (settings.dkim_selector and settings.dkim_private_key):
        return Finding(
            Level.WARNING,
            "DKIM",
            "messages are not signed (NEWSLETTER_DKIM_SELECTOR and NEWSLETTER_DKIM_PRIVATE_KEY"
            f" unset): Gmail and Yahoo require DKIM of bulk senders, so unless the relay signs for"
            f" {domain} (with List-Unsubscribe-Post among its signed headers), set them",
        )
    try:
        key = load_dkim_key(settings.dkim_private_key)
    except ConfigError:
        return Finding(Level.WARNING, "DKIM", "the key is reported with the settings: not checked")
    signing_domain = settings.dkim_domain or domain
    name = f"{settings.dkim_selector}._domainkey.{signing_domain}"
    publish = _txt(name, dns_record(key))
    ours = public_key_data(key)
    published = [_dkim_tags(record) for record in resolver.txt(name)]
    keys = [tags.get("p", "") for tags in published if "p" in tags]
    if any(_same_key(p, ours) for p in keys):
        finding = Finding(
            Level.OK, "DKIM", f"{name} publishes the key of NEWSLETTER_DKIM_PRIVATE_KEY"
        )
    elif not keys:
        finding = Finding(
            Level.PROBLEM,
            "DKIM",
            f"no DKIM key at {name}: receivers cannot verify the signatures",
            publish=publish,
        )
    elif all(not p for p in keys):
        finding = Finding(
            Level.PROBLEM, "DKIM", f"{name} revokes its key (empty p=)", publish=publish
        )
    else:
        finding = Finding(
            Level.PROBLEM,
            "DKIM",
            f"{name} publishes another key than NEWSLETTER_DKIM_PRIVATE_KEY's: every signature"
            " would fail",
            publish=publish,
        )
    if finding.level is Level.OK and not _aligned(signing_domain, domain):
        return Finding(
            Level.WARNING,
            "DKIM",
            f"{finding.text}, but d={signing_domain} is not aligned with the From domain"
            f" {domain}: DMARC passes on DKIM only when they share a domain",
        )
    return finding


def _dkim_tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())  # whitespace inside p= is allowed
    return tags


def _same_key(published: str, ours: bytes) -> bool:
    try:
        return base64.b64decode(published, validate=True) == ours
    except (binascii.Error, ValueError):
        return False


def _aligned(signing: str, author: str) -> bool:
    """DMARC's relaxed alignment, with the organisational domain taken as the last two labels."""
    return signing.split(".")[-2:] == author.split(".")[-2:]


def _check_dmarc(domain: str, resolver: TxtResolver) -> Finding:
    # The From domain's own record, else its organisational domain's (RFC 7489 6.6.3), looked
    # for here up the parents that keep two labels or more.
    labels = domain.split(".")
    for start in range(max(len(labels) - 1, 1)):
        owner = ".".join(labels[start:])
        name = f"_dmarc.{owner}"
        records = [r for r in resolver.txt(name) if r.replace(" ", "").startswith("v=DMARC1")]
        if len(records) > 1:
            return Finding(
                Level.PROBLEM,
                "DMARC",
                f"{name} has {len(records)} DMARC records: receivers then ignore them all;"
                " keep one",
            )
        if records:
            whose = "" if owner == domain else f" (the policy of {owner} covers {domain})"
            return Finding(Level.OK, "DMARC", f"{name}: {records[0]}{whose}")
    return Finding(
        Level.PROBLEM,
        "DMARC",
        f"{domain} has no DMARC record (_dmarc.{domain}): Gmail and Yahoo require one of bulk"
        " senders; p=none starts by only watching (see README, Deliverability)",
        publish=_txt(f"_dmarc.{domain}", "v=DMARC1; p=none"),
    )
