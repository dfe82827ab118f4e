"""Integration tests: the whole service over HTTP and through the ``stylequeue submit`` CLI."""
