"""Options the API clients (``submit``, ``fleet``, ...) share: where the service is."""

from __future__ import annotations

import click

from stylequeue.shared.settings import ClientSettings, load_client_settings

server_option = click.option(
    "--server",
    default=lambda: load_client_settings().server,
    show_default=f"$STYLEQUEUE_SERVER, else {ClientSettings.server}",
    help="Base URL of the service.",
)
