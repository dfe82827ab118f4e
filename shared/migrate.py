"""Run Alembic migrations from code (``stylequeue migrate``, ``make run``, test fixtures).

The scripts are found as the ``stylequeue.migrations`` package, so an installed stylequeue
(a wheel, a container) upgrades without the repository's ``alembic.ini``.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("stylequeue.migrations")))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
