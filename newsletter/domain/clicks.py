"""Click counting rules (issue 15): which clicks are a reader's, how they add up, and where a
click lands. Pure: no I/O, used by the redirect (web/clicks.py), the store's fold and the stats.

Readers, not scanners. A click is **not counted** when:

* the request is a HEAD, or a prefetch or preview (``Sec-Purpose: prefetch``, ``Purpose:
  prefetch``, ``X-Moz: prefetch``, ``X-Purpose: preview``);
* its user agent is empty or names a known link scanner or robot (``SCANNER_AGENTS``:
  BingPreview and Microsoft's safe links, Barracuda, Mimecast, Proofpoint, HTTP libraries such as
  python-requests, curl, Go-http-client, and anything calling itself a bot, spider or crawler);
* the link is from an editors' test message (subscriber id 0);
* at counting time, its message is a scanner's (``scanner_messages``): a reader (subscriber) of
  an edition whose clicks cover at least ``SCANNER_MIN_ARTICLES`` (3) distinct articles and all
  fall within ``SCANNER_WINDOW`` (10 s) of each other, with no click of theirs outside that
  window. Security gateways open every link of a message within a second or two of delivery;
  people read one article, come back, read another. A person who opens three articles in new tabs
  within ten seconds and never clicks again is not counted either: the price of trusting counts.

A reader clicking the same link twice is 2 clicks and 1 unique clicker.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCANNER_MIN_ARTICLES = 3
SCANNER_WINDOW = timedelta(seconds=10)

# Lower-case substrings of user agents that are not a person's browser or mail client.
SCANNER_AGENTS: tuple[str, ...] = (
    "bingpreview",  # Microsoft Defender / Outlook safe links preview
    "safelinks",
    "barracuda",
    "mimecast",
    "proofpoint",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww-perl",
    "apache-httpclient",
    "headlesschrome",
    "googlebot",
    "facebookexternalhit",
)
# "bot", "spider", "crawler" as the end of a word ("Googlebot/2.1", "AhrefsBot", "Baiduspider"),
# but not the phone maker CUBOT, whose name appears in real Android browsers' user agents.
_ROBOT = re.compile(r"(?<!cu)bot\b|spider\b|crawler\b|crawl\b", re.IGNORECASE)

# Request headers (lower-case name -> lower-case value) that say "not a person clicking".
PREFETCH_HEADERS: tuple[tuple[str, str], ...] = (
    ("sec-purpose", "prefetch"),
    ("purpose", "prefetch"),
    ("x-moz", "prefetch"),
    ("x-purpose", "preview"),
)


def is_scanner_agent(user_agent: str) -> bool:
    """Whether a user agent is a link scanner, an HTTP library or a robot (or is missing)."""
    agent = user_agent.strip().lower()
    if not agent:
        return True
    return any(name in agent for name in SCANNER_AGENTS) or _ROBOT.search(agent) is not None


def is_prefetch(headers: Mapping[str, str]) -> bool:
    """Whether the request headers announce a prefetch or a preview rather than a click."""
    return any(value in headers.get(name, "").lower() for name, value in PREFETCH_HEADERS)


@dataclass(frozen=True, slots=True)
class Click:
    """One stored click: a reader (subscriber id) on an article (its ref) of an edition."""

    edition_date: date
    article_ref: str
    subscriber_id: int
    clicked_at: datetime


@dataclass(frozen=True, slots=True)
class Tally:
    """Clicks on one article, and how many different readers made them."""

    clicks: int = 0
    unique_clicks: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.clicks + other.clicks, self.unique_clicks + other.unique_clicks)


def scanner_messages(clicks: Iterable[Click]) -> frozenset[tuple[date, int]]:
    """The messages (edition, subscriber) whose clicks are a scanner's (see the module)."""
    times: dict[tuple[date, int], list[datetime]] = defaultdict(list)
    refs: dict[tuple[date, int], set[str]] = defaultdict(set)
    for click in clicks:
        key = (click.edition_date, click.subscriber_id)
        times[key].append(click.clicked_at)
        refs[key].add(click.article_ref)
    return frozenset(
        key
        for key, moments in times.items()
        if len(refs[key]) >= SCANNER_MIN_ARTICLES and max(moments) - min(moments) <= SCANNER_WINDOW
    )


def tally(clicks: Iterable[Click]) -> dict[tuple[date, str], Tally]:
    """Per (edition, article): the counted clicks and unique clickers, scanners left out."""
    rows = list(clicks)
    scanners = scanner_messages(rows)
    counts: dict[tuple[date, str], int] = defaultdict(int)
    readers: dict[tuple[date, str], set[int]] = defaultdict(set)
    for click in rows:
        if (click.edition_date, click.subscriber_id) in scanners:
            continue
        key = (click.edition_date, click.article_ref)
        counts[key] += 1
        readers[key].add(click.subscriber_id)
    return {key: Tally(counts[key], len(readers[key])) for key in counts}


def with_campaign(url: str, utm: str, day: date) -> str:
    """``url`` with the NEWSLETTER_UTM parameters added to its query string: the URL's own
    parameters win on a clash, ``{date}`` is the edition's ISO date, the fragment is kept and
    the URL's own query is left byte for byte as it was."""
    if not utm:
        return url
    parts = urlsplit(url)
    own = {key for key, _value in parse_qsl(parts.query, keep_blank_values=True)}
    extra = [
        (key, value)
        for key, value in parse_qsl(utm.replace("{date}", day.isoformat()), keep_blank_values=True)
        if key not in own
    ]
    if not extra:
        return url
    query = "&".join(part for part in (parts.query, urlencode(extra)) if part)
    return urlunsplit(parts._replace(query=query))
