"""`nbagent view`: a trajectory file, a folder of them or an RL run folder, in a local web page."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from nbagent.cli.options import fail


def view_command(
    path: Annotated[
        Path, typer.Argument(help="A trajectory file, a folder of them, or an `nbagent-train rl` run folder.")
    ],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Write one self-contained HTML file instead of serving.", show_default=False
        ),
    ] = None,
    max_episodes: Annotated[
        int, typer.Option(help="With --html: how many whole episodes to embed (every row is listed).")
    ] = 500,
) -> None:
    """Browse episodes: a sortable, filterable table, each episode as a notebook with its tokens, and a
    run's curves and eval tables."""
    from nbagent.view.data import Collection
    from nbagent.view.html import write_html
    from nbagent.view.server import ViewServer

    try:
        collection = Collection.open(path)
    except (FileNotFoundError, OSError) as exc:
        fail(str(exc))
    if html is not None:
        embedded = write_html(collection, html, max_episodes)
        capped = (
            f" ({embedded} embedded whole; raise --max-episodes for more)"
            if embedded < len(collection.rows)
            else ""
        )
        typer.echo(f"{html}: {len(collection.rows)} episodes{capped}")
        return
    try:
        server = ViewServer(collection, port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port}: {exc}")
    typer.echo(f"{len(collection.rows)} episodes from {collection.root}; serving {server.url} (Ctrl-C stops)")
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
