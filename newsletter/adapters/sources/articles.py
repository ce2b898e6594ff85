"""Sources: article text on one line, category lists, and one article per identity."""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from newsletter.domain import Article, category_key
from newsletter.domain.text import one_line

# Titles, authors and categories end up in mail headers, where a CR/LF would forge headers;
# they are cleaned by the one rule for "text to one safe line" (no-break spaces survive: French
# puts them before : ; ? ! and inside « »).
clean_line = one_line


def clean_categories(names: Iterable[str]) -> tuple[str, ...]:
    """Cleaned category names in feed order (the first is primary), empty and repeated ones out."""
    seen: set[str] = set()
    kept: list[str] = []
    for name in names:
        label = clean_line(html.unescape(str(name)))
        key = category_key(label)
        if key and key not in seen:
            seen.add(key)
            kept.append(label)
    return tuple(kept)


def merge_articles(articles: Iterable[Article]) -> list[Article]:
    """One article per identity (same uid or same link), the freshest version, newest first.

    On equal freshness the version read first (earlier source, earlier in its feed) is kept.
    """
    return merge_noting_duplicates(articles)[0]


def merge_noting_duplicates(
    articles: Iterable[Article],
) -> tuple[list[Article], list[tuple[Article, Article]]]:
    """``merge_articles``, and each version it dropped paired with the version kept instead."""
    kept: dict[int, Article] = {}
    members: dict[int, list[Article]] = {}  # every version of the group, the kept one included
    keys_of: dict[int, set[str]] = {}
    owner: dict[str, int] = {}
    for number, article in enumerate(articles):
        keys = {"uid:" + article.uid, "link:" + _link_key(article.link)}
        versions = []
        group_members: list[Article] = []
        for group in sorted({owner[k] for k in keys if k in owner}):
            versions.append(kept.pop(group))
            group_members.extend(members.pop(group))
            keys |= keys_of.pop(group)
        versions.append(article)
        group_members.append(article)
        best = versions[0]
        for version in versions[1:]:
            if version.freshness > best.freshness:  # strictly: ties keep the earlier version
                best = version
        kept[number] = best
        members[number] = group_members
        keys_of[number] = keys
        owner.update(dict.fromkeys(keys, number))
    duplicates = [
        (version, kept[group])
        for group, versions in members.items()
        for version in versions
        if version is not kept[group]
    ]
    merged = sorted(kept.values(), key=lambda a: (a.published, a.uid), reverse=True)
    return merged, duplicates


def _link_key(link: str) -> str:
    """A link compared case-insensitively in scheme and host, without its #fragment."""
    try:
        parts = urlsplit(link.strip())
    except ValueError:  # unparseable: compared as written
        return link.strip()
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
