"""Sources: feeds downloaded over http(s) with a deadline, a size cap and a validator cache."""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from newsletter.adapters.files import write_atomically
from newsletter.adapters.sources.errors import _size, _SourceFailure

if TYPE_CHECKING:  # imported when a URL is first fetched: a send from files never pays for it
    import httpx

MAX_REDIRECTS = 5
_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


@dataclass(frozen=True, slots=True)
class _Cached:
    body: bytes
    etag: str
    last_modified: str


class _Fetcher:
    """Downloads feeds over http(s) with a deadline, a size cap and an optional validator cache."""

    def __init__(
        self, timeout: float, user_agent: str, cache_dir: Path | None, max_bytes: int
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.cache_dir = cache_dir
        self._client: httpx.Client | None = None
        self._headers = {
            "User-Agent": user_agent,
            "Accept": _ACCEPT,
            # Only gzip: we inflate it ourselves, chunk by chunk, so a small compressed body cannot
            # expand past the size cap in memory.
            "Accept-Encoding": "gzip",
        }

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> httpx.Client:
        # Created on first use: reading only files should not pay for an SSL context.
        if self._client is None:
            import httpx

            self._client = httpx.Client(headers=self._headers, follow_redirects=False)
        return self._client

    def fetch(self, url: str) -> tuple[bytes, str, str]:
        """(body, final URL, content type) of ``url``; raises _SourceFailure with a short reason."""
        import httpx

        try:
            return self._fetch(url)
        except httpx.TimeoutException:
            raise _SourceFailure(f"timed out after {self.timeout:g}s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _SourceFailure(f"invalid URL ({exc})") from None
        except httpx.HTTPError as exc:
            raise _SourceFailure(f"unreachable ({exc or type(exc).__name__})") from None

    def _fetch(self, url: str) -> tuple[bytes, str, str]:
        import httpx

        deadline = time.monotonic() + self.timeout
        cached = self._cache_load(url)
        headers = _conditional_headers(cached)
        current = url
        # We follow redirects by hand so that every hop is checked to be http(s) and counted.
        for _hop in range(MAX_REDIRECTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.TimeoutException("deadline")
            with self.client.stream("GET", current, headers=headers, timeout=remaining) as response:
                if response.has_redirect_location:
                    current = _redirect_target(current, response.headers["location"])
                    continue
                content_type = response.headers.get("content-type", "")
                if response.status_code == 304 and cached is not None:
                    return cached.body, current, content_type
                if response.status_code != 200:
                    raise _SourceFailure(f"HTTP {response.status_code} {response.reason_phrase}")
                body = _read_capped(response, self.max_bytes, deadline)
                self._cache_store(url, response.headers, body)
                return body, current, content_type
        raise _SourceFailure(f"too many redirects (more than {MAX_REDIRECTS})")

    # Conditional GET: the validators and body of the last 200 answer, one pair of files per URL.
    # The cache is an optimisation only: an unreadable or unwritable cache never fails a source.

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        stem = hashlib.sha256(url.encode()).hexdigest()[:32]
        return self.cache_dir / f"{stem}.json", self.cache_dir / f"{stem}.body"

    def _cache_load(self, url: str) -> _Cached | None:
        paths = self._cache_paths(url)
        if paths is None:
            return None
        try:
            meta = json.loads(paths[0].read_text(encoding="utf-8"))
            body = paths[1].read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        return _Cached(body, str(meta.get("etag", "")), str(meta.get("last_modified", "")))

    def _cache_store(self, url: str, headers: httpx.Headers, body: bytes) -> None:
        paths = self._cache_paths(url)
        etag = headers.get("etag", "")
        last_modified = headers.get("last-modified", "")
        if paths is None or not (etag or last_modified):
            return
        meta = {"url": url, "etag": etag, "last_modified": last_modified}
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            # A crash mid-write must not leave a truncated body that a later 304 would reuse.
            write_atomically(paths[1], body)
            write_atomically(paths[0], json.dumps(meta).encode())
        except OSError:
            pass


def _conditional_headers(cached: _Cached | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if cached is not None and cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached is not None and cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    return headers


def _redirect_target(current: str, location: str) -> str:
    target = urljoin(current, location.strip())
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise _SourceFailure(f"redirected to a non-http(s) URL ({scheme or 'no scheme'}:)")
    return target


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    """The decoded body, refusing more than ``max_bytes`` and anything past the deadline.

    httpx's own timeout is per network read, so a server trickling one byte at a time would never
    trip it: the deadline check between chunks bounds the whole download.
    """
    import httpx

    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _SourceFailure(f"larger than {_size(max_bytes)}")
    inflater = _inflater(response.headers.get("content-encoding", ""))
    body = _CappedBuffer(max_bytes)
    for chunk in response.iter_raw():
        if inflater is None:
            body.add(chunk)
        else:
            body.add_compressed(inflater, chunk)
        if time.monotonic() > deadline:
            raise httpx.TimeoutException("deadline")
    return body.value()


def _inflater(encoding: str) -> Any:
    """A zlib decompressor for the Content-Encoding, or None for an uncompressed body."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # 32: accept gzip or zlib headers
    raise _SourceFailure(f"unsupported Content-Encoding {encoding!r}")


class _CappedBuffer:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        if len(self._data) + len(chunk) > self._max:
            raise _SourceFailure(f"larger than {_size(self._max)}")
        self._data += chunk

    def add_compressed(self, inflater: Any, chunk: bytes) -> None:
        # max_length bounds each inflated piece: a gzip bomb stops at the cap, not in memory.
        pending = chunk
        while pending:
            self.add(inflater.decompress(pending, self._max - len(self._data) + 1))
            pending = inflater.unconsumed_tail

    def value(self) -> bytes:
        return bytes(self._data)
