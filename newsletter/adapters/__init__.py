"""Adapters: the database, the relay, feeds, templates, tokens and files."""
