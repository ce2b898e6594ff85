"""Settings: the environment plus ``.env`` (python-dotenv; the environment wins), validated once.

``SETTINGS`` is the one documented table of every setting; ``.env.example`` and the README are
checked against it by the tests. ``load_settings()`` returns one frozen ``Settings`` or raises
``ConfigError`` naming the setting and the form it expects.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from newsletter.domain import DEFAULT_SECTION_ORDER
from newsletter.domain.errors import UsageError
from newsletter.domain.locales import canonical_locale, locale_spelling
from newsletter.domain.timetable import Timetable
from newsletter.domain.urls import is_secure_or_local_url, redact_url

N = TypeVar("N", int, float)
SmtpSecurity = Literal["none", "starttls", "tls"]
DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}


class ConfigError(UsageError):
    """A setting is missing or malformed. Exit status 2."""


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
        "comma-separated feed URLs, feed files or folders of JSON articles; empty = the bundled sample",
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
        "NEWSLETTER_SMTP_TIMEOUT",
        "30",
        "seconds allowed for each SMTP network step, and for each whole reply however many lines "
        "it has",
    ),
    SettingDoc(
        "NEWSLETTER_SMTP_CONNECT_TIMEOUT",
        "10",
        "seconds allowed to connect to the relay, finish the TLS handshake and get its greeting",
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
        "signs every link token; required to send or serve; never logged",
    ),
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
    confirm_days: int
    thank_you_url: str
    editors: tuple[str, ...]
    preview_lead_minutes: int
    trusted_proxies: tuple[str, ...] = ()

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
        """Raise unless everything a real send needs is set."""
        for name, value in (
            ("NEWSLETTER_FROM", self.from_address),
            ("NEWSLETTER_BASE_URL", self.base_url),
            ("NEWSLETTER_SECRET_KEY", self.secret_key),
        ):
            if not value:
                raise ConfigError(
                    f"{name} is not set", "set it in the environment or .env; see .env.example"
                )

    def require_secret(self) -> None:
        if not self.secret_key:
            raise ConfigError(
                "NEWSLETTER_SECRET_KEY is not set",
                "set a long random value, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            )


def read_environment(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Merge ``.env`` (if present) under the process environment: the environment wins."""
    path = env_file if env_file is not None else Path.cwd() / ".env"
    merged: dict[str, str] = {}
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def load_settings(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    raw = read_environment(env_file, environ)

    def get(name: str) -> str:
        return raw.get(name, _DEFAULTS[name]).strip()

    security = get("NEWSLETTER_SMTP_SECURITY").lower()
    if security not in DEFAULT_PORTS:
        raise ConfigError(
            f"NEWSLETTER_SMTP_SECURITY={security!r} is not a security mode",
            "expected one of: none, starttls, tls",
        )
    port_text = get("NEWSLETTER_SMTP_PORT")
    base_url = get("NEWSLETTER_BASE_URL").rstrip("/")
    return Settings(
        sources=_split(get("NEWSLETTER_SOURCES")),
        database_url=get("NEWSLETTER_DATABASE_URL"),
        timezone=_zone(get("NEWSLETTER_TIMEZONE")),
        send_time=_hhmm("NEWSLETTER_SEND_TIME", get("NEWSLETTER_SEND_TIME")),
        send_deadline_hours=_number(
            "NEWSLETTER_SEND_DEADLINE", get("NEWSLETTER_SEND_DEADLINE"), float, 0
        ),
        title=get("NEWSLETTER_TITLE"),
        locale=_locale(get("NEWSLETTER_LOCALE")),
        section_order=_split(get("NEWSLETTER_SECTIONS")),
        max_per_section=_number(
            "NEWSLETTER_MAX_PER_SECTION", get("NEWSLETTER_MAX_PER_SECTION"), int, 1
        ),
        excerpt_chars=_number("NEWSLETTER_EXCERPT_CHARS", get("NEWSLETTER_EXCERPT_CHARS"), int, 40),
        feed_timeout=_number("NEWSLETTER_FEED_TIMEOUT", get("NEWSLETTER_FEED_TIMEOUT"), float, 0.1),
        smtp_host=get("NEWSLETTER_SMTP_HOST"),
        smtp_port=(
            _number("NEWSLETTER_SMTP_PORT", port_text, int, 1)
            if port_text
            else DEFAULT_PORTS[security]
        ),
        smtp_security=security,  # type: ignore[arg-type]
        smtp_username=get("NEWSLETTER_SMTP_USERNAME"),
        smtp_password=raw.get("NEWSLETTER_SMTP_PASSWORD", ""),
        smtp_connections=_number(
            "NEWSLETTER_SMTP_CONNECTIONS", get("NEWSLETTER_SMTP_CONNECTIONS"), int, 1
        ),
        smtp_rate=_number("NEWSLETTER_SMTP_RATE", get("NEWSLETTER_SMTP_RATE"), float, 0),
        smtp_timeout=_number("NEWSLETTER_SMTP_TIMEOUT", get("NEWSLETTER_SMTP_TIMEOUT"), float, 0.1),
        smtp_connect_timeout=_number(
            "NEWSLETTER_SMTP_CONNECT_TIMEOUT", get("NEWSLETTER_SMTP_CONNECT_TIMEOUT"), float, 0.1
        ),
        from_address=_one_line("NEWSLETTER_FROM", get("NEWSLETTER_FROM")),
        reply_to=_one_line("NEWSLETTER_REPLY_TO", get("NEWSLETTER_REPLY_TO")),
        unsubscribe_mailto=_one_line(
            "NEWSLETTER_UNSUBSCRIBE_MAILTO", get("NEWSLETTER_UNSUBSCRIBE_MAILTO")
        ),
        base_url=_base_url(base_url),
        secret_key=raw.get("NEWSLETTER_SECRET_KEY", ""),
        admin_user=get("NEWSLETTER_ADMIN_USER"),
        admin_password=raw.get("NEWSLETTER_ADMIN_PASSWORD", ""),
        signup_promise=_one_line("NEWSLETTER_SIGNUP_PROMISE", get("NEWSLETTER_SIGNUP_PROMISE")),
        confirm_days=_number("NEWSLETTER_CONFIRM_DAYS", get("NEWSLETTER_CONFIRM_DAYS"), int, 1),
        thank_you_url=get("NEWSLETTER_THANK_YOU_URL"),
        editors=_split(get("NEWSLETTER_EDITORS")),
        preview_lead_minutes=_number(
            "NEWSLETTER_PREVIEW_LEAD", get("NEWSLETTER_PREVIEW_LEAD"), int, 0
        ),
        trusted_proxies=_networks("NEWSLETTER_TRUSTED_PROXIES", get("NEWSLETTER_TRUSTED_PROXIES")),
    )


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
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a number", f"expected a {kind.__name__} >= {minimum}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf: not a setting
        raise ConfigError(
            f"{name}={text!r} is not a finite number", f"expected a {kind.__name__} >= {minimum}"
        )
    if value < minimum:
        raise ConfigError(
            f"{name}={text!r} is too small", f"expected a {kind.__name__} >= {minimum}"
        )
    if name == "NEWSLETTER_SMTP_PORT" and value > 65535:
        raise ConfigError(f"{name}={text!r} is too large", "expected a TCP port, 1 to 65535")
    if name == "NEWSLETTER_SMTP_CONNECTIONS" and value > MAX_SMTP_CONNECTIONS:
        # Each connection is a thread and a socket; relays cap connections per client far lower.
        raise ConfigError(
            f"{name}={text!r} is too large",
            f"expected 1 to {MAX_SMTP_CONNECTIONS} connections (4 suits most relays)",
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
