"""newsletter: a news site's day of articles, as one email edition, delivered exactly once."""

__version__ = "0.1.0"
