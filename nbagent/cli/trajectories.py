"""`nbagent show` and `nbagent export`: recorded trajectories, pretty-printed or converted."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nbagent.cli.options import fail, one_line_errors
from nbagent.cli.run import StepPrinter
from nbagent.output_files import check_output_file, check_output_folder
from nbagent.trajectory import CorruptTrajectoryError, Trajectory


class ExportFormat(StrEnum):
    openai = "openai"
    sharegpt = "sharegpt"
    ipynb = "ipynb"


def _read_selected(path: Path, index: int | None, skip_corrupt: bool) -> list[Trajectory]:
    """The trajectories of `path` (or the one at `index`); a corrupt line `fail`s naming it and
    ``--skip-corrupt``, unless that was given."""
    from nbagent.trajectory import read_trajectories

    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist.")
    try:
        trajectories = list(read_trajectories(path, on_error="skip" if skip_corrupt else "raise"))
    except CorruptTrajectoryError as exc:
        fail(
            f"{exc.path}:{exc.line_no}: corrupt trajectory record ({exc.reason}); "
            "pass --skip-corrupt to skip bad lines, or repair or delete that line."
        )
    if index is None:
        return trajectories
    if not -len(trajectories) <= index < len(trajectories):
        raise typer.BadParameter(f"--index {index}: {path} holds {len(trajectories)} trajectories.")
    return [trajectories[index]]


PathArgument = Annotated[Path, typer.Argument(help="A trajectory JSONL file.", show_default=False)]
IndexOption = Annotated[
    int | None, typer.Option("--index", "-i", help="Only the trajectory at this position (0 first, -1 last).")
]
SkipCorruptOption = Annotated[
    bool,
    typer.Option(
        "--skip-corrupt", help="Skip lines that are not trajectory records instead of stopping at the first."
    ),
]


def show(
    path: PathArgument,
    index: IndexOption = None,
    skip_corrupt: SkipCorruptOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the system prompt.")] = False,
) -> None:
    """Pretty-print the trajectories of a JSONL file."""
    printer = StepPrinter(Console(highlight=False), verbose=verbose)
    for traj in _read_selected(path, index, skip_corrupt):
        printer.trajectory(traj)


def export(
    path: PathArgument,
    export_format: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file (JSONL for openai/sharegpt), or folder for ipynb. Default: stdout.",
        ),
    ] = None,
    index: IndexOption = None,
    skip_corrupt: SkipCorruptOption = False,
) -> None:
    """Export trajectories as OpenAI chat messages, ShareGPT conversations or notebooks."""
    from nbagent.trajectory.export import to_notebook, to_openai_messages, to_sharegpt

    notebooks = export_format is ExportFormat.ipynb
    with one_line_errors():
        if notebooks:
            check_output_folder(out or Path("."), "the notebooks")
        elif out is not None:
            check_output_file(out, "the export")
    trajectories = _read_selected(path, index, skip_corrupt)
    if notebooks:
        folder = out or Path(".")
        for traj in trajectories:
            target = folder / f"{traj.id}.ipynb"
            to_notebook(traj, target)
            typer.echo(str(target))
        return
    lines = [
        json.dumps(
            {"id": traj.id, "messages": to_openai_messages(traj)}
            if export_format is ExportFormat.openai
            else to_sharegpt(traj),
            ensure_ascii=False,
        )
        for traj in trajectories
    ]
    if out is None:
        for line in lines:
            typer.echo(line)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        typer.echo(f"{len(lines)} trajectories written to {out}", err=True)
