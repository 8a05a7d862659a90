"""The `tiergate` console script."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiergate.config import Settings, load_settings
from tiergate.errors import ConfigError
from tiergate.index.cli import app as index_app
from tiergate.service.admin_cli import app as cache_app

app = typer.Typer(help="tiergate: a gateway that makes retrieval-augmented LLM serving cheap.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default: $TIERGATE_CONFIG).")
]


app.add_typer(index_app, name="index")
app.add_typer(cache_app, name="cache")


def settings_or_exit(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (overrides server.port).")] = None,
) -> None:
    """Serve the gateway (OpenAI-compatible API, admin, metrics)."""
    from tiergate.service import heap, logs
    from tiergate.service.app import create_app
    from tiergate.service.server import DrainingServer

    heap.pin_mmap_threshold()  # before any model loads or thread starts: see tiergate.service.heap
    heap.limit_arenas()
    settings = settings_or_exit(config)
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    logs.configure(settings.server.log_format, settings.server.log_level)
    try:
        application = create_app(settings)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    DrainingServer(application, settings).run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
