"""``probe_url``: does a URL answer? For ``newsletter check``, which asks it of the base URL."""

from __future__ import annotations

import re

import httpx

from newsletter.adapters.sources.errors import DEFAULT_USER_AGENT


def probe_url(url: str, timeout: float = 5.0) -> str:
    """``""`` when ``url`` answers 200, else one line saying what happened instead.

    Certificates are verified, as a reader's browser would; no redirect is followed, so the
    answer is the one this URL gives.
    """
    try:
        response = httpx.get(
            url, timeout=timeout, follow_redirects=False, headers={"User-Agent": DEFAULT_USER_AGENT}
        )
    except httpx.TimeoutException:
        return f"no answer within {timeout:g} s"
    except httpx.HTTPError as err:
        return _reason(err)
    if response.status_code != 200:
        return f"answered {response.status_code} {response.reason_phrase}".rstrip()
    return ""


def _reason(err: httpx.HTTPError) -> str:
    # httpx wraps the socket's error; its innermost cause says it best ("Connection refused").
    cause: BaseException = err
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(cause).strip()) or type(cause).__name__
    return text.splitlines()[0]
