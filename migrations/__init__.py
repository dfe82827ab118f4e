"""Alembic's migration scripts, shipped as ``stylequeue.migrations`` so an install can upgrade."""
