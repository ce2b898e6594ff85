"""URLs: one owner for the http(s) check and one for the password redaction (domain/urls)."""

from __future__ import annotations

import pytest

from newsletter.domain.urls import http_url, is_http_url, is_secure_or_local_url, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://news:s3cret@db.example/newsletter",
            "postgresql://news:***@db.example/newsletter",
        ),
        ("postgresql+psycopg://u:p@ss@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
        ("https://editor:s3cret@feeds.example/rss", "https://editor:***@feeds.example/rss"),
        ("postgresql://news@db.example/newsletter", "postgresql://news@db.example/newsletter"),
        ("sqlite:///var/lib/newsletter.db", "sqlite:///var/lib/newsletter.db"),
        ("user:pw@host/db", "***@host/db"),  # no scheme: everything before the @ is hidden
    ],
)
def test_redact_url_hides_the_password_up_to_the_last_at(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_settings_repr_and_store_messages_use_the_same_redaction() -> None:
    from newsletter.adapters.store import redact_url as store_redact

    assert store_redact is redact_url


@pytest.mark.parametrize(
    "url", ["https://www.example.sn/a", "HTTP://exemple.ma/", "http://127.0.0.1:8000/x"]
)
def test_http_urls(url: str) -> None:
    assert is_http_url(url) and http_url(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.org/f",
        "javascript:alert(1)",
        "https:///path",
        "https://[exemple.ma/a",
        "/a",
    ],
)
def test_not_http_urls(url: str) -> None:
    assert not is_http_url(url)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://news.example.sn", True),
        ("http://localhost:8000", True),
        ("http://127.0.0.1:8000", True),
        ("http://[::1]:8000", True),
        ("http://news.example.sn", False),
        ("ftp://localhost/", False),
        ("https://[broken", False),
    ],
)
def test_a_public_link_is_https_or_local_http(url: str, ok: bool) -> None:
    assert is_secure_or_local_url(url) is ok
