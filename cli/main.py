"""The ``stylequeue`` command group.

Subcommands live in their own modules and are imported only when run, so ``stylequeue
submit`` never loads TensorFlow and ``stylequeue transfer`` never loads Flask.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "transfer": "stylequeue.cli.transfer:transfer",
    "submit": "stylequeue.cli.submit:submit",
    "delete": "stylequeue.cli.delete:delete",
    "fleet": "stylequeue.cli.fleet:fleet",
    "dev": "stylequeue.cli.dev:dev",
    "migrate": "stylequeue.cli.admin:migrate",
    "sweep": "stylequeue.cli.admin:sweep",
    "webhook-secret": "stylequeue.cli.admin:webhook_secret",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="stylequeue")
def main() -> None:
    """stylequeue: neural style transfer as a self-hosted service."""
