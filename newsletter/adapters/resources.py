"""Where the files that ship with the package live: templates and the bundled sample.

In a wheel, ``templates/`` is installed as ``newsletter/templates`` (see pyproject's
force-include); in a source checkout or an editable install it is the top-level ``templates/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # the newsletter package


def templates_dir() -> Path:
    for candidate in (_PACKAGE / "templates", _PACKAGE.parent / "templates"):
        if (candidate / "digest.html").is_file():
            return candidate
    raise FileNotFoundError("newsletter's templates are missing: reinstall the package")


def sample_dir() -> Path:
    """The bundled sample content: a WordPress-style French feed used by defaults and the demo."""
    return _PACKAGE / "sample"


#: the edition day the bundled sample feed is written for (its articles fall in that window)
SAMPLE_EDITION_DATE = "2026-01-27"
