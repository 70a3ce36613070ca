"""Indexing a path by byte offset, episodes on demand, the server's API and its limits, the --html file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.view.data import Collection
from nbagent.view.html import embed_json, render_html
from nbagent.view.server import ViewServer
from tests.fixtures.trajectories import trajectory
from tests.view.conftest import SCRIPT


def test_a_file_is_indexed_with_offsets_and_episodes_load_on_demand(trajectory_file: Path) -> None:
    found = Collection.open(trajectory_file)
    assert found.kind == "file"
    lines = trajectory_file.read_text().splitlines()
    assert len(found.rows) == len(lines) == 7
    assert found.episode(1) == json.loads(lines[1])
    first = found.rows[0]
    assert (first["task"], first["environment"], first["split"], first["termination"]) == (
        "t17",
        "demo",
        "test",
        "submitted",
    )
    assert first["steps"] == 2
    assert found.rows[1]["tokens"] == 7
    assert found.rows[1]["breakdown"] == {"correct": 1.0}
    with pytest.raises(IndexError):
        found.episode(7)


def test_torn_and_foreign_lines_are_counted_not_listed(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = trajectory("a", reward=1.0).to_json_line()
    path.write_text(good + '{"schema_version": 99}\n' + "not json\n" + good + good[:40])
    found = Collection.open(path)
    assert [r["index"] for r in found.rows] == [0, 1]
    assert found.skipped == 3
    assert found.episode(1)["task"]["id"] == "a"


def test_a_run_folder_has_iterations_metrics_and_reports(run_folder: Path) -> None:
    found = Collection.open(run_folder)
    assert found.kind == "run"
    assert sorted({r["iteration"] for r in found.rows}) == [1, 2]
    assert [m["iteration"] for m in found.metrics] == [1, 2]
    assert found.reports[0]["file"] == "eval/report.json"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.fixture
def served(trajectory_file: Path) -> Any:
    server = ViewServer(Collection.open(trajectory_file))
    Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_server_listens_on_loopback_and_serves_only_its_api(served: ViewServer) -> None:
    assert served.server_address[0] == "127.0.0.1"
    url = served.url
    assert json.loads(_get(url + "api/summary")[1])["episodes"] == 7
    assert len(json.loads(_get(url + "api/rows")[1])) == 7
    assert json.loads(_get(url + "api/episode/2")[1])["task"]["id"] == "xss-task"
    assert _get(url + "static/view.js")[0] == 200
    for path in (
        "api/episode/99",
        "api/episode/-1",
        "static/../data.py",
        "static/%2e%2e/data.py",
        "../../etc/passwd",
    ):
        assert _get(url + path)[0] == 404, path


def test_the_html_file_cannot_be_closed_by_recorded_text(trajectory_file: Path) -> None:
    page = render_html(Collection.open(trajectory_file), max_episodes=10)
    assert SCRIPT not in page
    assert "</script><script>" not in page
    assert page.count("<script") == 2  # the data and the page's own script
    assert json.loads(embed_json({"a": "</script>&"})) == {"a": "</script>&"}


def test_the_command_writes_the_html_file_and_says_what_it_capped(
    trajectory_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "v.html"
    result = CliRunner().invoke(
        app, ["view", str(trajectory_file), "--html", str(out), "--max-episodes", "2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{out}: 7 episodes (2 embedded whole; raise --max-episodes for more)"
    missing = CliRunner().invoke(app, ["view", str(tmp_path / "nope.jsonl"), "--no-browser"])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
