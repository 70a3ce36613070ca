"""`nbagent show`, `export` and `run` on bad files and bad output paths, as the real console script: each
exits non-zero with one line on stderr and no traceback, and a failed save never loses the other output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbagent.trajectory import read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer, script_responder
from tests.fixtures.trajectories import trajectory

NBAGENT = Path(sys.executable).with_name("nbagent")
ENDPOINT_ENV = ("NBAGENT_BASE_URL", "OPENAI_BASE_URL", "NBAGENT_MODEL", "NBAGENT_API_KEY", "OPENAI_API_KEY")
SOLVE = [
    "<think>Multiply.</think>\n<code>\nx = 17 * 23\nprint(x)\n</code>",
    "<think>It printed 391.</think>\n<code>\nsubmit_final_answer(x)\n</code>",
]


def nbagent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_ENV}
    return subprocess.run(
        [str(NBAGENT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting that is all there is)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text(
        trajectory(final_answer="a").to_json_line()
        + "{not json\n"
        + trajectory(final_answer="b").to_json_line()
    )
    return path


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(script_responder(SOLVE), model="fake-model") as srv:
        yield srv


def test_show_a_corrupt_line_names_it_and_the_option(corrupt_file: Path) -> None:
    line = one_error_line(nbagent("show", str(corrupt_file)))
    assert line.startswith(f"error: {corrupt_file}:2: corrupt trajectory record")
    assert "--skip-corrupt" in line
    assert "on_error" not in line
    skipped = nbagent("show", str(corrupt_file), "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.count("Task") == 2


def test_show_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 8)
    line = one_error_line(nbagent("show", str(path)))
    assert f"{path}:1: corrupt trajectory record" in line
    assert "--skip-corrupt" in line


def test_export_a_corrupt_file(corrupt_file: Path) -> None:
    line = one_error_line(nbagent("export", str(corrupt_file), "--format", "openai"))
    assert f"{corrupt_file}:2:" in line
    assert "--skip-corrupt" in line
    skipped = nbagent("export", str(corrupt_file), "--format", "openai", "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr
    assert len(skipped.stdout.splitlines()) == 2


def test_export_to_a_folder_given_as_its_file(corrupt_file: Path, tmp_path: Path) -> None:
    args = ["export", str(corrupt_file), "--format", "openai", "--skip-corrupt", "--out", str(tmp_path)]
    line = one_error_line(nbagent(*args))
    assert f"cannot write the export to {tmp_path}: it is a folder" in line


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_run_refuses_a_bad_notebook_path_before_the_episode(
    server: FakeOpenAIServer, tmp_path: Path, where: str
) -> None:
    (tmp_path / "file.txt").write_text("x")
    notebook = tmp_path if where == "folder" else tmp_path / "file.txt" / "run.ipynb"
    traj = tmp_path / "t.jsonl"
    args = ["run", "q", "--base-url", server.base_url, "--notebook", str(notebook), "--trajectory", str(traj)]
    line = one_error_line(nbagent(*args))
    assert f"cannot write the notebook to {notebook}" in line
    assert server.requests == [], "the episode ran although its notebook could not be saved"
    assert not traj.exists()


def sabotage(target: Path) -> list[Any]:
    """A script whose first cell turns `target` into a folder, so that saving there fails at the end."""
    return [
        lambda _body: f"<think>Spoil.</think>\n<code>\nimport os\nos.makedirs({str(target)!r})\n</code>",
        "<think>Done.</think>\n<code>\nsubmit_final_answer(391)\n</code>",
    ]


@pytest.mark.parametrize("failing", ["notebook", "trajectory"])
def test_a_failed_save_keeps_the_other_output(tmp_path: Path, failing: str) -> None:
    paths = {"notebook": tmp_path / "run.ipynb", "trajectory": tmp_path / "t.jsonl"}
    kept = "trajectory" if failing == "notebook" else "notebook"
    with FakeOpenAIServer(script_responder(sabotage(paths[failing]))) as srv:
        proc = nbagent(
            "run", "q", "--base-url", srv.base_url,
            "--notebook", str(paths["notebook"]), "--trajectory", str(paths["trajectory"]),
        )  # fmt: skip
    line = one_error_line(proc)
    assert f"could not write the {failing} to {paths[failing]}" in line
    assert f"the {kept} was saved to {paths[kept]}" in line
    if kept == "trajectory":
        (traj,) = read_trajectories(paths["trajectory"])
        assert traj.final_answer == "391"  # `nbagent run` asks for a text answer
    else:
        nbformat.validate(nbformat.read(str(paths["notebook"]), as_version=4))


def test_json_output_still_reports_what_was_saved(tmp_path: Path) -> None:
    notebook, traj = tmp_path / "run.ipynb", tmp_path / "t.jsonl"
    with FakeOpenAIServer(script_responder(sabotage(notebook))) as srv:
        proc = nbagent(
            "run", "q", "--base-url", srv.base_url, "--notebook", str(notebook), "--trajectory", str(traj),
            "--json", "--quiet",
        )  # fmt: skip
    assert proc.returncode != 0
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert payload["trajectory"] == str(traj)
    assert payload["notebook"] is None
    assert "could not write the notebook" in proc.stderr
