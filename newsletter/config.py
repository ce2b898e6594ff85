"""Settings: the environment plus ``.env`` (python-dotenv; the environment wins), validated once.

``SETTINGS`` is the one documented table of every setting; ``.env.example`` and the README are
checked against it by the tests. ``load_settings()`` returns one frozen ``Settings`` or raises
``ConfigError`` naming the setting and the form it expects.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.domain import DEFAULT_SECTION_ORDER
from newsletter.domain.errors import UsageError
from newsletter.domain.locales import canonical_locale, locale_spelling
from newsletter.domain.timetable import Timetable
from newsletter.domain.urls import http_url, is_http_url, is_secure_or_local_url, redact_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    DkimPrivateKey = RSAPrivateKey | Ed25519PrivateKey

N = TypeVar("N", int, float)
T = TypeVar("T")
SmtpSecurity = Literal["none", "starttls", "tls"]
ArchiveMode = Literal["public", "unlisted", "off"]
ARCHIVE_MODES: tuple[ArchiveMode, ...] = ("public", "unlisted", "off")
#: Fields NEWSLETTER_SUBJECT may name.
SUBJECT_FIELDS = ("headline", "title", "date", "count")
DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}

#: Names the code reads that are not settings: private hooks of the test suite.
_PRIVATE_PREFIX = "NEWSLETTER_TEST_"
#: The shortest secret key accepted. Length is all that can be checked: 32 random URL-safe
#: characters carry 192 bits, above the 128 a signing key needs; the keygen command makes 43.
MIN_SECRET_KEY_CHARS = 32
KEYGEN_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
SECRET_SETTINGS = frozenset(
    {
        "NEWSLETTER_SECRET_KEY",
        "NEWSLETTER_SMTP_PASSWORD",
        "NEWSLETTER_ADMIN_PASSWORD",
        "NEWSLETTER_BOUNCE_IMAP_PASSWORD",
    }
)


class ConfigError(UsageError):
    """A setting is missing or malformed. Exit status 2."""

    def __init__(self, message: str, hint: str | None = None, *, setting: str = "") -> None:
        super().__init__(message, hint)
        # The setting at fault; when not given, the name that opens the message.
        self.setting = setting or message.split("=", 1)[0].split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class SettingDoc:
    name: str
    default: str
    help: str


# The one table of settings. Order is the order of .env.example and the README.
SETTINGS: tuple[SettingDoc, ...] = (
    SettingDoc(
        "NEWSLETTER_SOURCES",
        "",
        "comma-separated feed URLs, feed files or folders of JSON articles; required by send and run (empty = the bundled sample, for demo and preview only)",
    ),
    SettingDoc(
        "NEWSLETTER_DATABASE_URL",
        "sqlite:///subscribers/newsletter.db",
        "SQLAlchemy URL of the store (SQLite file or postgresql+psycopg://...)",
    ),
    SettingDoc(
        "NEWSLETTER_TIMEZONE",
        "Africa/Casablanca",
        "IANA time zone of the edition day and the send time",
    ),
    SettingDoc(
        "NEWSLETTER_SEND_TIME", "07:00", "daily send time, HH:MM local; also the edition's cut-off"
    ),
    SettingDoc(
        "NEWSLETTER_SEND_DEADLINE",
        "6",
        "hours after the send time during which the scheduler still catches up a missed send",
    ),
    SettingDoc("NEWSLETTER_TITLE", "La Lettre", "newsletter name shown in the email and pages"),
    SettingDoc("NEWSLETTER_LOCALE", "fr", "language of dates and fixed text (fr, en, ar ...)"),
    SettingDoc(
        "NEWSLETTER_SITE_URL",
        "",
        "the site's home page, linked from the masthead; empty = the first feed's <link>",
    ),
    SettingDoc(
        "NEWSLETTER_LOGO_URL",
        "",
        "https URL of the masthead logo (about 400 x 80 px, dark on light); empty = the title as"
        " text",
    ),
    SettingDoc(
        "NEWSLETTER_PUBLISHER",
        "",
        "the publisher's name, shown in every email's footer (`check` warns when empty)",
    ),
    SettingDoc(
        "NEWSLETTER_POSTAL_ADDRESS",
        "",
        "the publisher's postal address, one line, shown in every email's footer (`check` warns"
        " when empty)",
    ),
    SettingDoc(
        "NEWSLETTER_SUBJECT",
        "",
        "Subject pattern with {headline}, {title}, {date}, {count}; empty = the lead headline,"
        " cut on a word within 80 characters",
    ),
    SettingDoc(
        "NEWSLETTER_ARCHIVE",
        "public",
        "web versions and the /archive of sent editions: public, unlisted (not listed, noindex)"
        " or off",
    ),
    SettingDoc(
        "NEWSLETTER_SECTIONS",
        ",".join(DEFAULT_SECTION_ORDER),
        "section order, comma-separated; sections not listed come after, by name",
    ),
    SettingDoc("NEWSLETTER_MAX_PER_SECTION", "10", "most articles per section (newest first)"),
    SettingDoc(
        "NEWSLETTER_EXCERPT_CHARS",
        "400",
        "longest excerpt, in characters, before the size budget shortens it",
    ),
    SettingDoc("NEWSLETTER_FEED_TIMEOUT", "20", "seconds allowed for each feed download"),
    SettingDoc("NEWSLETTER_SMTP_HOST", "localhost", "SMTP relay host"),
    SettingDoc(
        "NEWSLETTER_SMTP_PORT",
        "",
        "SMTP relay port; empty = by security: 25 none, 587 starttls, 465 tls",
    ),
    SettingDoc(
        "NEWSLETTER_SMTP_SECURITY",
        "starttls",
        "none, starttls or tls (certificates are always verified)",
    ),
    SettingDoc("NEWSLETTER_SMTP_USERNAME", "", "relay login (AUTH is only sent over TLS)"),
    SettingDoc("NEWSLETTER_SMTP_PASSWORD", "", "relay password; never logged"),
    SettingDoc(
        "NEWSLETTER_SMTP_CONNECTIONS",
        "4",
        "parallel SMTP connections, each reused for many messages; 1 to 100",
    ),
    SettingDoc("NEWSLETTER_SMTP_RATE", "0", "messages per second over all connections; 0 = no cap"),
    SettingDoc(
        "NEWSLETTER_SEND_PROCESSES",
        "1",
        "sender processes for one `newsletter send`, each with its share of the connections (so "
        "at most NEWSLETTER_SMTP_CONNECTIONS); one process uses one core, so the number of cores "
        "suits a large list",
    ),
    SettingDoc(
        "NEWSLETTER_SMTP_TIMEOUT",
        "30",
        "seconds allowed for each SMTP network step, and for each whole reply however many lines "
        "it has",
    ),
    SettingDoc(
        "NEWSLETTER_SMTP_CONNECT_TIMEOUT",
        "10",
        "seconds allowed to open a relay session: connect, TLS handshake, greeting, EHLO, STARTTLS and AUTH",
    ),
    SettingDoc("NEWSLETTER_FROM", "", "sender, 'Display Name <address>'; required to send"),
    SettingDoc("NEWSLETTER_REPLY_TO", "", "optional Reply-To address"),
    SettingDoc(
        "NEWSLETTER_UNSUBSCRIBE_MAILTO",
        "",
        "mailbox for mailto: unsubscribes; empty = unsubscribe@ the From domain",
    ),
    SettingDoc(
        "NEWSLETTER_BASE_URL",
        "",
        "public https URL of `newsletter serve` (http only on loopback); required to send",
    ),
    SettingDoc(
        "NEWSLETTER_SECRET_KEY",
        "",
        "signs every link token; at least 32 characters; required to send or serve; never logged",
    ),
    SettingDoc(
        "NEWSLETTER_BOUNCE_ADDRESS",
        "",
        "mailbox that returned mail goes to; each message's envelope sender is"
        " bounces+TOKEN@ its domain (VERP); empty = bounces@ the From domain",
    ),
    SettingDoc(
        "NEWSLETTER_BOUNCE_IMAP_URL",
        "",
        "imaps://user@host/INBOX of a mailbox to poll for returned mail; empty = no polling"
        " (route bounces+* to `newsletter bounce-mail` instead)",
    ),
    SettingDoc("NEWSLETTER_BOUNCE_IMAP_PASSWORD", "", "password of that mailbox; never logged"),
    SettingDoc(
        "NEWSLETTER_BOUNCE_POLL_MINUTES", "5", "minutes between two polls of that mailbox by run"
    ),
    SettingDoc(
        "NEWSLETTER_SOFT_BOUNCE_LIMIT",
        "3",
        "soft bounces (4.x.x), on that many different editions within"
        " NEWSLETTER_SOFT_BOUNCE_DAYS, that stop a subscriber as bounced",
    ),
    SettingDoc("NEWSLETTER_SOFT_BOUNCE_DAYS", "30", "days over which soft bounces are counted"),
    SettingDoc(
        "NEWSLETTER_SNS_TOPIC_ARNS",
        "",
        "comma-separated Amazon SNS topic ARNs whose signed SES notifications POST /hooks/ses"
        " accepts; empty = that webhook off",
    ),
    SettingDoc(
        "NEWSLETTER_DKIM_SELECTOR", "", "DKIM selector; with a key, every message is signed"
    ),
    SettingDoc(
        "NEWSLETTER_DKIM_PRIVATE_KEY",
        "",
        "path of the DKIM private key, PEM (RSA 2048+ or Ed25519); empty = no signing",
    ),
    SettingDoc("NEWSLETTER_DKIM_DOMAIN", "", "the signature's d= domain; empty = the From domain"),
    SettingDoc("NEWSLETTER_ADMIN_USER", "editor", "HTTP Basic user for the editors' pages"),
    SettingDoc("NEWSLETTER_ADMIN_PASSWORD", "", "HTTP Basic password; unset = editors' pages off"),
    SettingDoc(
        "NEWSLETTER_SIGNUP_PROMISE",
        "",
        "what the sign-up page promises, e.g. 'Chaque soir à 18 h'; empty = worded from the send"
        " time",
    ),
    SettingDoc("NEWSLETTER_CONFIRM_DAYS", "7", "days a sign-up confirmation link stays valid"),
    SettingDoc(
        "NEWSLETTER_THANK_YOU_URL",
        "",
        "where a sign-up form posted from the site is redirected (303); must be on BASE_URL's site",
    ),
    SettingDoc(
        "NEWSLETTER_TRUSTED_PROXIES",
        "",
        "comma-separated IPs or networks (CIDR) of the reverse proxies whose X-Forwarded-For and"
        " X-Forwarded-Proto are believed; empty = none, the connecting address is the client",
    ),
    SettingDoc(
        "NEWSLETTER_EDITORS",
        "",
        "comma-separated addresses that get each edition as a test send before it goes out",
    ),
    SettingDoc(
        "NEWSLETTER_PREVIEW_LEAD",
        "60",
        "minutes before the send time that editors get their test send",
    ),
    SettingDoc(
        "NEWSLETTER_TRACK_CLICKS",
        "false",
        "count clicks on article links through signed redirects under BASE_URL/c/ (true/false);"
        " readers can turn it off for themselves",
    ),
    SettingDoc(
        "NEWSLETTER_UTM",
        "",
        "campaign parameters added to article links when clicks are tracked, e.g."
        " utm_source=newsletter&utm_medium=email&utm_campaign=lettre-{date}",
    ),
    SettingDoc(
        "NEWSLETTER_CLICK_RETENTION_DAYS",
        "30",
        "days each reader's clicks are kept before they are folded into per-article totals",
    ),
    SettingDoc(
        "NEWSLETTER_TRACK_OPENS",
        "false",
        "add an open-counting pixel (true/false); off by default: opens are unreliable (see"
        " Privacy)",
    ),
)

_DEFAULTS: dict[str, str] = {s.name: s.default for s in SETTINGS}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Settings:
    sources: tuple[str, ...]
    database_url: str
    timezone: ZoneInfo
    send_time: time
    send_deadline_hours: float
    title: str
    locale: str
    site_url: str
    logo_url: str
    publisher: str
    postal_address: str
    subject_pattern: str
    archive: ArchiveMode
    section_order: tuple[str, ...]
    max_per_section: int
    excerpt_chars: int
    feed_timeout: float
    smtp_host: str
    smtp_port: int
    smtp_security: SmtpSecurity
    smtp_username: str
    smtp_password: str
    smtp_connections: int
    smtp_rate: float
    send_processes: int
    smtp_timeout: float
    smtp_connect_timeout: float
    from_address: str
    reply_to: str
    unsubscribe_mailto: str
    base_url: str
    secret_key: str
    admin_user: str
    admin_password: str
    signup_promise: str
    bounce_address: str
    bounce_imap_url: str
    bounce_imap_password: str
    bounce_poll_minutes: int
    soft_bounce_limit: int
    soft_bounce_days: int
    sns_topic_arns: tuple[str, ...]
    dkim_selector: str
    dkim_private_key: str
    dkim_domain: str
    confirm_days: int
    thank_you_url: str
    editors: tuple[str, ...]
    preview_lead_minutes: int
    track_clicks: bool = False
    utm: str = ""
    click_retention_days: int = 30
    track_opens: bool = False
    trusted_proxies: tuple[str, ...] = ()
    unknown: tuple[UnknownSetting, ...] = ()

    def __repr__(self) -> str:
        # Secrets must never reach a log line, even through a debug print of the settings.
        return f"Settings(database_url={redact_url(self.database_url)!r}, sources={self.sources!r})"

    @property
    def timetable(self) -> Timetable:
        """The send time, deadline and preview lead as the domain's timetable."""
        return Timetable(
            send_time=self.send_time,
            zone=self.timezone,
            deadline=timedelta(hours=self.send_deadline_hours),
            preview_lead=timedelta(minutes=self.preview_lead_minutes),
        )

    def next_edition_date(self, now: datetime | None = None) -> date:
        """The coming edition: the first whose send time is still ahead (``Timetable.next_edition``).

        At the send instant itself the edition of the day is going out, so the coming one is
        tomorrow's, as the daemon sees it.
        """
        return self.timetable.next_edition(now or datetime.now(UTC))

    def require_sending(self) -> None:
        """Raise ``ConfigProblems`` naming everything a real send or the web app lacks."""
        problems = self._required_problems()
        if problems:
            raise ConfigProblems(problems)

    def problems_for(
        self, purpose: Purpose, skip: frozenset[str] = frozenset()
    ) -> list[ConfigError]:
        """What ``purpose`` cannot go without; ``skip`` names settings already reported."""
        problems = [
            ConfigError(
                unknown.problem,
                f"{unknown.fix} {purpose.value} refuses to start until it is fixed",
                setting=unknown.name,
            )
            for unknown in self.unknown
        ]
        problems += [p for p in self._required_problems() if p.setting not in skip]
        if purpose is Purpose.SEND and not self.sources:
            problems.append(
                ConfigError(
                    "NEWSLETTER_SOURCES is empty",
                    "set it to your site's feed URLs; only demo and preview use the bundled"
                    " sample articles",
                    setting="NEWSLETTER_SOURCES",
                )
            )
        problems += [p for p in self._dkim_problems() if p.setting not in skip]
        return problems

    def _dkim_problems(self) -> list[ConfigError]:
        """DKIM: both settings or neither, a selector that is a DNS name, a usable key file."""
        selector, key = "NEWSLETTER_DKIM_SELECTOR", "NEWSLETTER_DKIM_PRIVATE_KEY"
        if not self.dkim_selector and not self.dkim_private_key:
            return []
        hint = "set both to sign every message with DKIM, or neither"
        if not self.dkim_private_key:
            return [ConfigError(f"{selector} is set but {key} is not", hint, setting=key)]
        if not self.dkim_selector:
            return [ConfigError(f"{key} is set but {selector} is not", hint, setting=selector)]
        problems = []
        for name, value in (
            (selector, self.dkim_selector),
            ("NEWSLETTER_DKIM_DOMAIN", self.dkim_domain),
        ):
            if value and not _DNS_NAME.fullmatch(value):
                problems.append(
                    ConfigError(
                        f"{name}={value!r} is not a DNS name",
                        "expected letters, digits and hyphens, in labels separated by dots",
                        setting=name,
                    )
                )
        try:
            load_dkim_key(self.dkim_private_key)
        except ConfigError as err:
            problems.append(err)
        return problems

    def _required_problems(self) -> list[ConfigError]:
        # Imported here: the address rules load email-validator, which `--help` need not pay for.
        from newsletter.domain.addresses import InvalidMailbox, parse_mailbox

        problems: list[ConfigError] = []
        for name, value in (
            ("NEWSLETTER_FROM", self.from_address),
            ("NEWSLETTER_BASE_URL", self.base_url),
            ("NEWSLETTER_SECRET_KEY", self.secret_key),
        ):
            if not value:
                problems.append(
                    ConfigError(
                        f"{name} is not set",
                        _REQUIRED_HINTS[name],
                        setting=name,
                    )
                )
        if self.from_address:
            try:
                parse_mailbox(self.from_address)
            except InvalidMailbox as err:
                problems.append(ConfigError(f"NEWSLETTER_FROM: {err}", setting="NEWSLETTER_FROM"))
        if self.secret_key and len(self.secret_key) < MIN_SECRET_KEY_CHARS:
            problems.append(
                ConfigError(
                    f"NEWSLETTER_SECRET_KEY is too short ({len(self.secret_key)} characters;"
                    f" at least {MIN_SECRET_KEY_CHARS})",
                    f"make a good one with: {KEYGEN_COMMAND}",
                    setting="NEWSLETTER_SECRET_KEY",
                )
            )
        return problems


_REQUIRED_HINTS = {
    "NEWSLETTER_FROM": "set it in the environment or .env, e.g. 'La Lettre <lettre@example.com>'",
    "NEWSLETTER_BASE_URL": "set it to the public https URL of `newsletter serve`",
    "NEWSLETTER_SECRET_KEY": f"make one with: {KEYGEN_COMMAND}",
}


class Purpose(Enum):
    """What a command is about to do, and so which settings it cannot go without."""

    SEND = "send"  # send (real, --test or --dry-run) and run: mail goes out
    SERVE = "serve"  # serve: links are signed and confirmations mailed


class ConfigProblems(ConfigError):
    """Several settings are wrong at once; each problem is its own line."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        super().__init__(problems[0].message, problems[0].hint)
        self.problems = tuple(problems)

    def lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]


@dataclass(frozen=True, slots=True)
class UnknownSetting:
    """A ``NEWSLETTER_*`` name that is no setting: most likely a misspelt one."""

    name: str
    origin: str  # "environment" or ".env"
    suggestion: str | None

    @property
    def problem(self) -> str:
        where = "the environment" if self.origin == "environment" else ".env"
        return f"{self.name} in {where} is not a setting"

    @property
    def fix(self) -> str:
        if self.suggestion:
            return f"did you mean {self.suggestion}?"
        return "see .env.example for every setting"

    def __str__(self) -> str:
        return f"{self.problem} ({self.fix})"


@dataclass(frozen=True, slots=True)
class Origins:
    """Where each setting's value came from, for ``newsletter check --settings``."""

    values: Mapping[str, str]  # the raw value of every setting, defaults included
    origin: Mapping[str, str]  # "environment", ".env" or "default"
    env_file: Path


def read_environment(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Merge ``.env`` (if present) under the process environment: the environment wins."""
    return _read_sources(env_file, environ)[0]


def _read_sources(
    env_file: Path | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str], Mapping[str, str], Path]:
    path = env_file if env_file is not None else Path.cwd() / ".env"
    from_file: dict[str, str] = {}
    if path.is_file():
        # Imported only for a file to read: python-dotenv loads logging and tempfile, which a
        # command run from the environment alone (`status` under systemd) need not pay for.
        from dotenv import dotenv_values

        from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
    environment = os.environ if environ is None else environ
    merged = {**from_file, **environment}
    return merged, from_file, environment, path


def setting_origins(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Origins:
    """Every setting's effective raw value and where it came from."""
    merged, from_file, environment, path = _read_sources(env_file, environ)
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    for doc in SETTINGS:
        values[doc.name] = merged.get(doc.name, doc.default)
        if doc.name in environment:
            origin[doc.name] = "environment"
        elif doc.name in from_file:
            origin[doc.name] = ".env"
        else:
            origin[doc.name] = "default"
    return Origins(values=values, origin=origin, env_file=path)


def unknown_settings(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[UnknownSetting, ...]:
    """Every ``NEWSLETTER_*`` name, in the environment or ``.env``, that is not a setting."""
    _, from_file, environment, _ = _read_sources(env_file, environ)
    return _unknown_names(from_file, environment)


def _unknown_names(
    from_file: Mapping[str, str], environment: Mapping[str, str]
) -> tuple[UnknownSetting, ...]:
    found: dict[str, UnknownSetting] = {}
    for origin, names in (("environment", environment), (".env", from_file)):
        for name in names:
            if not name.startswith("NEWSLETTER_") or name in _DEFAULTS or name in found:
                continue
            if name.startswith(_PRIVATE_PREFIX):
                continue
            found[name] = UnknownSetting(name, origin, _closest_setting(name))
    return tuple(sorted(found.values(), key=lambda unknown: unknown.name))


def _closest_setting(name: str) -> str | None:
    # Compare without the common prefix and underscores, so SENDTIME finds SEND_TIME and
    # SMTP_HOTS finds SMTP_HOST: the shared "NEWSLETTER_" would make every name look alike.
    def key(text: str) -> str:
        return text.removeprefix("NEWSLETTER_").replace("_", "")

    by_key = {key(doc.name): doc.name for doc in SETTINGS}
    match = difflib.get_close_matches(key(name), list(by_key), n=1, cutoff=0.6)
    return by_key[match[0]] if match else None


def load_settings(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    purpose: Purpose | None = None,
) -> Settings:
    """The validated settings, or ``ConfigProblems`` naming every wrong setting at once.

    With a ``purpose``, what that purpose cannot go without is checked in the same pass: the
    settings a send or the web app needs, a strong secret key, sources for a send, and no
    unknown ``NEWSLETTER_*`` name (a misspelt setting silently left at its default is how an
    edition goes out wrong).
    """
    raw, from_file, environment, _ = _read_sources(env_file, environ)
    problems: list[ConfigError] = []

    def get(name: str) -> str:
        return raw.get(name, _DEFAULTS[name]).strip()

    def number(name: str, kind: type[N], minimum: N) -> N:
        return _number(name, get(name), kind, minimum)

    def parse(build: Callable[[], T], fallback: T) -> T:
        try:
            return build()
        except ConfigError as err:
            problems.append(err)
            return fallback

    security = get("NEWSLETTER_SMTP_SECURITY").lower()
    if security not in DEFAULT_PORTS:
        problems.append(
            ConfigError(
                f"NEWSLETTER_SMTP_SECURITY={security!r} is not a security mode",
                "expected one of: none, starttls, tls",
            )
        )
        security = "starttls"
    port_text = get("NEWSLETTER_SMTP_PORT")
    values = dict(
        sources=_split(get("NEWSLETTER_SOURCES")),
        database_url=get("NEWSLETTER_DATABASE_URL"),
        timezone=parse(lambda: _zone(get("NEWSLETTER_TIMEZONE")), UTC_ZONE),
        send_time=parse(lambda: _hhmm("NEWSLETTER_SEND_TIME", get("NEWSLETTER_SEND_TIME")), time()),
        send_deadline_hours=parse(lambda: number("NEWSLETTER_SEND_DEADLINE", float, 0), 0.0),
        title=get("NEWSLETTER_TITLE"),
        locale=parse(lambda: _locale(get("NEWSLETTER_LOCALE")), "en"),
        site_url=parse(lambda: _site_url(get("NEWSLETTER_SITE_URL")), ""),
        logo_url=parse(lambda: _logo_url(get("NEWSLETTER_LOGO_URL")), ""),
        publisher=parse(lambda: _one_line("NEWSLETTER_PUBLISHER", get("NEWSLETTER_PUBLISHER")), ""),
        postal_address=parse(
            lambda: _one_line("NEWSLETTER_POSTAL_ADDRESS", get("NEWSLETTER_POSTAL_ADDRESS")), ""
        ),
        subject_pattern=parse(lambda: _subject_pattern(get("NEWSLETTER_SUBJECT")), ""),
        archive=parse(lambda: _archive_mode(get("NEWSLETTER_ARCHIVE")), "public"),
        section_order=_split(get("NEWSLETTER_SECTIONS")),
        max_per_section=parse(lambda: number("NEWSLETTER_MAX_PER_SECTION", int, 1), 1),
        excerpt_chars=parse(lambda: number("NEWSLETTER_EXCERPT_CHARS", int, 40), 40),
        feed_timeout=parse(lambda: number("NEWSLETTER_FEED_TIMEOUT", float, 0.1), 1.0),
        smtp_host=get("NEWSLETTER_SMTP_HOST"),
        smtp_port=(
            parse(lambda: _number("NEWSLETTER_SMTP_PORT", port_text, int, 1), 0)
            if port_text
            else DEFAULT_PORTS[security]
        ),
        smtp_security=security,
        smtp_username=get("NEWSLETTER_SMTP_USERNAME"),
        smtp_password=raw.get("NEWSLETTER_SMTP_PASSWORD", ""),
        smtp_connections=parse(lambda: number("NEWSLETTER_SMTP_CONNECTIONS", int, 1), 1),
        smtp_rate=parse(lambda: number("NEWSLETTER_SMTP_RATE", float, 0), 0.0),
        send_processes=parse(lambda: _send_processes(get), 1),
        smtp_timeout=parse(lambda: number("NEWSLETTER_SMTP_TIMEOUT", float, 0.1), 1.0),
        smtp_connect_timeout=parse(
            lambda: number("NEWSLETTER_SMTP_CONNECT_TIMEOUT", float, 0.1), 1.0
        ),
        from_address=parse(lambda: _one_line("NEWSLETTER_FROM", get("NEWSLETTER_FROM")), ""),
        reply_to=parse(lambda: _one_line("NEWSLETTER_REPLY_TO", get("NEWSLETTER_REPLY_TO")), ""),
        unsubscribe_mailto=parse(
            lambda: _one_line(
                "NEWSLETTER_UNSUBSCRIBE_MAILTO", get("NEWSLETTER_UNSUBSCRIBE_MAILTO")
            ),
            "",
        ),
        base_url=parse(lambda: _base_url(get("NEWSLETTER_BASE_URL").rstrip("/")), ""),
        secret_key=raw.get("NEWSLETTER_SECRET_KEY", ""),
        bounce_address=parse(
            lambda: _one_line("NEWSLETTER_BOUNCE_ADDRESS", get("NEWSLETTER_BOUNCE_ADDRESS")), ""
        ),
        bounce_imap_url=parse(lambda: _imap_url(get("NEWSLETTER_BOUNCE_IMAP_URL")), ""),
        bounce_imap_password=raw.get("NEWSLETTER_BOUNCE_IMAP_PASSWORD", ""),
        bounce_poll_minutes=parse(lambda: number("NEWSLETTER_BOUNCE_POLL_MINUTES", int, 1), 5),
        soft_bounce_limit=parse(lambda: number("NEWSLETTER_SOFT_BOUNCE_LIMIT", int, 1), 3),
        soft_bounce_days=parse(lambda: number("NEWSLETTER_SOFT_BOUNCE_DAYS", int, 1), 30),
        sns_topic_arns=_split(get("NEWSLETTER_SNS_TOPIC_ARNS")),
        dkim_selector=get("NEWSLETTER_DKIM_SELECTOR"),
        dkim_private_key=get("NEWSLETTER_DKIM_PRIVATE_KEY"),
        dkim_domain=get("NEWSLETTER_DKIM_DOMAIN").lower(),
        admin_user=get("NEWSLETTER_ADMIN_USER"),
        admin_password=raw.get("NEWSLETTER_ADMIN_PASSWORD", ""),
        signup_promise=parse(
            lambda: _one_line("NEWSLETTER_SIGNUP_PROMISE", get("NEWSLETTER_SIGNUP_PROMISE")), ""
        ),
        confirm_days=parse(lambda: number("NEWSLETTER_CONFIRM_DAYS", int, 1), 1),
        thank_you_url=get("NEWSLETTER_THANK_YOU_URL"),
        editors=_split(get("NEWSLETTER_EDITORS")),
        preview_lead_minutes=parse(lambda: number("NEWSLETTER_PREVIEW_LEAD", int, 0), 0),
        track_clicks=parse(
            lambda: _flag("NEWSLETTER_TRACK_CLICKS", get("NEWSLETTER_TRACK_CLICKS")), False
        ),
        utm=parse(lambda: _utm(get("NEWSLETTER_UTM")), ""),
        click_retention_days=parse(lambda: number("NEWSLETTER_CLICK_RETENTION_DAYS", int, 1), 30),
        track_opens=parse(
            lambda: _flag("NEWSLETTER_TRACK_OPENS", get("NEWSLETTER_TRACK_OPENS")), False
        ),
        trusted_proxies=parse(
            lambda: _networks("NEWSLETTER_TRUSTED_PROXIES", get("NEWSLETTER_TRUSTED_PROXIES")), ()
        ),
        unknown=_unknown_names(from_file, environment),
    )
    settings = Settings(**values)  # type: ignore[arg-type]
    if purpose is not None:
        problems.extend(settings.problems_for(purpose, skip=_names_of(problems)))
    if problems:
        raise ConfigProblems(problems)
    return settings


def _names_of(problems: Sequence[ConfigError]) -> frozenset[str]:
    """The settings already reported malformed."""
    return frozenset(problem.setting for problem in problems)


UTC_ZONE = ZoneInfo("UTC")


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _networks(name: str, text: str) -> tuple[str, ...]:
    """IP addresses and CIDR networks, normalised ("10.0.0.0/8", "::1"); anything else refused."""
    networks = []
    for part in _split(text):
        try:
            network = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(
                f"{name} has {part!r}, which is not an IP address or network",
                "expected comma-separated addresses or CIDR networks, e.g. 127.0.0.1,10.0.0.0/8",
            ) from None
        single = network.num_addresses == 1
        networks.append(str(network.network_address) if single else str(network))
    return tuple(networks)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"NEWSLETTER_TIMEZONE={name!r} is not a known time zone",
            "expected an IANA name such as Africa/Casablanca or Europe/Paris",
        ) from None


def _hhmm(name: str, text: str) -> time:
    match = _HHMM.match(text)
    if not match:
        raise ConfigError(
            f"{name}={text!r} is not a time of day", "expected HH:MM, 24-hour, e.g. 07:00"
        )
    return time(int(match.group(1)), int(match.group(2)))


MAX_SMTP_CONNECTIONS = 100


def _number(name: str, text: str, kind: type[N], minimum: N) -> N:
    expected = f"expected {'a whole number' if kind is int else 'a number'} >= {minimum}"
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number", expected) from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf: not a setting
        raise ConfigError(f"{name}={text!r} is not a finite number", expected)
    if value < minimum:
        raise ConfigError(f"{name}={text!r} is too small", expected)
    if name == "NEWSLETTER_SMTP_PORT" and value > 65535:
        raise ConfigError(f"{name}={text!r} is too large", "expected a TCP port, 1 to 65535")
    if name == "NEWSLETTER_SMTP_CONNECTIONS" and value > MAX_SMTP_CONNECTIONS:
        # Each connection is a thread and a socket; relays cap connections per client far lower.
        raise ConfigError(
            f"{name}={text!r} is too large",
            f"expected 1 to {MAX_SMTP_CONNECTIONS} connections (4 suits most relays)",
        )
    return value


MAX_SEND_PROCESSES = 64


def _send_processes(get: Callable[[str], str]) -> int:
    """NEWSLETTER_SEND_PROCESSES: each process needs a connection of its own."""
    name = "NEWSLETTER_SEND_PROCESSES"
    value = _number(name, get(name), int, 1)
    if value > MAX_SEND_PROCESSES:
        raise ConfigError(
            f"{name}={value} is too large",
            f"expected 1 to {MAX_SEND_PROCESSES}; the number of cores suits a large list",
        )
    try:
        connections = int(get("NEWSLETTER_SMTP_CONNECTIONS"))
    except ValueError:
        return value  # reported as NEWSLETTER_SMTP_CONNECTIONS's own problem
    if value > connections:
        raise ConfigError(
            f"{name}={value} is more than NEWSLETTER_SMTP_CONNECTIONS={connections}",
            "each sender process needs a connection of its own: lower it, or raise "
            "NEWSLETTER_SMTP_CONNECTIONS",
        )
    return value


def _locale(text: str) -> str:
    if canonical_locale(text) is None:
        raise ConfigError(
            f"NEWSLETTER_LOCALE={text!r} is not a known locale",
            "expected a code such as fr, en or ar",
        )
    return locale_spelling(text)


def _one_line(name: str, text: str) -> str:
    # Imported here: the text rules compile their patterns and load nh3, which `--help` and the
    # commands that read no settings need not pay for.
    from newsletter.domain.text import breaks_line

    if breaks_line(text):
        raise ConfigError(
            f"{name} contains a line break or a control character", "write it on one line"
        )
    return text


def _base_url(url: str) -> str:
    if not url:
        return url
    if is_secure_or_local_url(url):
        return url
    raise ConfigError(
        f"NEWSLETTER_BASE_URL={url!r} is not an https URL",
        "one-click unsubscribe (RFC 8058) needs https; plain http is allowed only for localhost",
    )


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def _flag(name: str, text: str) -> bool:
    value = text.lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ConfigError(f"{name}={text!r} is not true or false", "expected true or false")


def _utm(text: str) -> str:
    """Query parameters ``a=b&c=d``; ``{date}`` is replaced by the edition's date at send time."""
    from urllib.parse import parse_qsl

    text = _one_line("NEWSLETTER_UTM", text).lstrip("?")
    if not text:
        return ""
    try:
        pairs = parse_qsl(text.replace("{date}", "2026-01-27"), strict_parsing=True)
    except ValueError:
        pairs = []
    if not pairs or any(not key or " " in key + value for key, value in pairs):
        raise ConfigError(
            f"NEWSLETTER_UTM={text!r} is not a query string",
            "expected name=value pairs joined by &, e.g. utm_source=newsletter&utm_medium=email",
        )
    return text


def _site_url(url: str) -> str:
    if url and not is_http_url(url):
        raise ConfigError(
            f"NEWSLETTER_SITE_URL={url!r} is not an http(s) URL",
            "expected the site's home page, e.g. https://www.example.com/",
        )
    return url


def _logo_url(url: str) -> str:
    """An https URL: mail clients block or warn about plain-http images in a secure message."""
    parts = http_url(url) if url else None
    if url and (parts is None or parts.scheme.lower() != "https"):
        raise ConfigError(
            f"NEWSLETTER_LOGO_URL={url!r} is not an https URL",
            "mail clients block plain-http images; give the logo's https address",
        )
    if any(ch in url for ch in "\"'<> \t\r\n"):
        raise ConfigError(
            "NEWSLETTER_LOGO_URL contains spaces, quotes or angle brackets",
            "percent-encode them (%20, %22, %3C, %3E)",
        )
    return url


def _subject_pattern(pattern: str) -> str:
    """A pattern naming only known fields: a typo must not reach 40,000 inboxes as "{headlne}"."""
    import string

    pattern = _one_line("NEWSLETTER_SUBJECT", pattern)
    hint = "fields: " + ", ".join("{" + name + "}" for name in SUBJECT_FIELDS) + "; write {{ for {"
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None]
    except ValueError as err:
        raise ConfigError(
            f"NEWSLETTER_SUBJECT={pattern!r} is not a pattern ({err})", hint
        ) from None
    unknown = [name for name in names if name not in SUBJECT_FIELDS]
    if unknown:
        raise ConfigError(f"NEWSLETTER_SUBJECT names an unknown field {{{unknown[0]}}}", hint)
    return pattern


def _archive_mode(text: str) -> ArchiveMode:
    mode = text.lower()
    for known in ARCHIVE_MODES:
        if mode == known:
            return known
    raise ConfigError(
        f"NEWSLETTER_ARCHIVE={text!r} is not an archive mode", "expected public, unlisted or off"
    )


def _imap_url(url: str) -> str:
    """``imaps://user@host[:port]/FOLDER``; plain ``imap://`` only on loopback (a password)."""
    if not url:
        return url
    from urllib.parse import urlsplit

    hint = "expected imaps://user@host/INBOX (imap:// only for localhost)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        raise ConfigError(f"NEWSLETTER_BOUNCE_IMAP_URL={url!r} is not a URL", hint) from None
    if parts.scheme not in ("imaps", "imap") or not parts.hostname or not parts.username:
        raise ConfigError(f"NEWSLETTER_BOUNCE_IMAP_URL={url!r} is not an IMAP URL", hint)
    if parts.password is not None:
        raise ConfigError(
            "NEWSLETTER_BOUNCE_IMAP_URL carries a password",
            "put it in NEWSLETTER_BOUNCE_IMAP_PASSWORD, which is never logged",
        )
    if parts.scheme == "imap" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ConfigError(f"NEWSLETTER_BOUNCE_IMAP_URL={url!r} is not over TLS", hint)
    return url


# -- DKIM ----------------------------------------------------------------------------------------

#: A selector or a d= domain: ASCII labels of letters, digits and inner hyphens, dot-separated.
_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
#: A PEM private key is a few kilobytes; past this the file is something else.
_MAX_KEY_FILE_BYTES = 64 * 1024
DKIM_KEYGEN_COMMAND = "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem"


def load_dkim_key(path: str) -> DkimPrivateKey:
    """The DKIM private key in the PEM file ``path``, or a one-line ``ConfigError``.

    Checked here, at start-up (``problems_for``), so that a send never starts with a key that
    would fail at its first message. RSA under 2048 bits is refused: receivers (Gmail among them)
    treat shorter keys as no signature.
    """
    # Imported here: only a site that signs pays for loading cryptography.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    name = "NEWSLETTER_DKIM_PRIVATE_KEY"
    make_one = f"make one with: {DKIM_KEYGEN_COMMAND}"
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{name}={path!r}: no such file", make_one) from None
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise ConfigError(f"{name}={path!r} cannot be read: {reason}", setting=name) from None
    not_pem = ConfigError(
        f"{name}={path!r} is not a PEM private key",
        f"expected a file starting with -----BEGIN PRIVATE KEY-----; {make_one}",
        setting=name,
    )
    if len(data) > _MAX_KEY_FILE_BYTES or b"-----BEGIN" not in data:
        raise not_pem
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:  # the key is encrypted: nobody is there to type its passphrase
        raise ConfigError(
            f"{name}={path!r} is protected by a passphrase",
            "DKIM signing needs it without one: openssl pkey -in KEY -out dkim.pem",
            setting=name,
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise not_pem from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(
                f"{name}={path!r} is an RSA key of {key.key_size} bits, too short",
                f"receivers ignore DKIM keys under 2048 bits; {make_one}",
                setting=name,
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(
        f"{name}={path!r} is neither an RSA nor an Ed25519 key",
        f"DKIM signs with RSA (2048 bits or more) or Ed25519; {make_one}",
        setting=name,
    )
