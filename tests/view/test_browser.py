"""The page in a real browser: headless Chromium loads it against a real trajectory file and a real RL run
folder, from the server and as the ``--html`` file; each view is also saved as a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbagent.view.data import Collection
from nbagent.view.html import write_html
from nbagent.view.server import ViewServer
from tests.view.conftest import SCRIPT

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(os.environ.get("NBAGENT_TEST_ARTIFACTS", ".cache/artifacts")) / "view"

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        pytest.fail(
            "chromium is not installed: .ci/run installs it (apt-get install chromium)", pytrace=False
        )
    pytestmark = pytest.mark.skip(
        reason="chromium is not installed (CI installs it; apt-get install chromium)"
    )


def chromium(url: str, *, screenshot: str | None = None) -> str:
    """The DOM of `url` after its scripts ran, or (with `screenshot`) save a PNG of it as an artifact."""
    assert CHROMIUM is not None
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    if screenshot is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        flags += [f"--screenshot={ARTIFACTS / screenshot}", "--window-size=1280,900", "--hide-scrollbars"]
    else:
        flags.append("--dump-dom")
    done = subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def main_of(dom: str) -> str:
    """The rendered ``<main>`` (the embedded data of an --html file excluded)."""
    assert 'data-ready="1"' in dom, dom[-2000:]
    return dom.split('<main id="main">', 1)[1].split("</main>", 1)[0]


def serve(path: Path) -> Iterator[str]:
    server = ViewServer(Collection.open(path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def file_url(trajectory_file: Path) -> Iterator[str]:
    yield from serve(trajectory_file)


@pytest.fixture(scope="module")
def run_url(run_folder: Path) -> Iterator[str]:
    yield from serve(run_folder)


def rows(main: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="row" data-index="(\d+)"', main)]


def test_the_table_lists_every_episode_and_filters(file_url: str) -> None:
    assert rows(main_of(chromium(file_url))) == list(range(7))
    assert rows(main_of(chromium(f"{file_url}#term=timeout"))) == [3]
    assert rows(main_of(chromium(f"{file_url}#q=grpo&min=0.5&max=1"))) == [5]
    grouped = main_of(chromium(f"{file_url}#group=1"))
    assert "grpo · group g1 · 3 samples · rewards 0 1 0 · mean 0.333" in grouped
    assert rows(main_of(chromium(f"{file_url}#sort=reward&desc=1")))[:2] == [1, 5]
    chromium(f"{file_url}#group=1", screenshot="table.png")


def test_an_episode_renders_its_cells_outputs_and_tool_calls(file_url: str) -> None:
    main = main_of(chromium(f"{file_url}#episode=0"))
    assert "Task t17" in main
    assert main.count('class="cell step"') == 2
    assert "x = 17 * 23" in main
    assert "391" in main
    assert re.search(r'<img class="output" src="data:image/png;base64,', main)
    assert "submit_final_answer(391)" in main  # the tool call and its argument
    assert "no token ids recorded" in main  # the scripted model records none
    chromium(f"{file_url}#episode=0", screenshot="episode.png")


def test_tokens_are_coloured_by_their_logprob(file_url: str) -> None:
    main = main_of(chromium(f"{file_url}#episode=1"))
    spans = [
        (dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)), token)
        for attrs, token in re.findall(r'<span class="tok"([^>]*)>(\d+)</span>', main)
    ]
    assert [(float(a["data-logprob"]), int(token)) for a, token in spans][:2] == [(-0.01, 27), (-0.2, 1851)]
    assert len(spans) == 7
    assert len({a["style"] for a, _ in spans}) == 7  # each logprob its own colour
    assert all(a["style"].startswith("background: rgb(") for a, _ in spans)
    assert spans[3][0]["title"] == "token 1350 · logprob -2.5000 · p 0.082"
    assert "context trim: dropped steps 0 · tokens 900 → 300" in main
    assert "lookup(key=&quot;five&quot;)" in main or 'lookup(key="five")' in main
    chromium(f"{file_url}#episode=1", screenshot="tokens.png")


def test_recorded_script_tags_render_as_text(file_url: str) -> None:
    dom = chromium(f"{file_url}#episode=2")
    main = main_of(dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in main
    assert SCRIPT not in dom


def test_a_run_folder_shows_its_curves_iterations_and_eval_tables(run_url: str) -> None:
    main = main_of(chromium(run_url))
    assert 'data-metric="reward_mean"' in main
    assert main.count("<circle") >= 2 * 5
    assert '<a href="#iter=1" class="iteration">1 (4 episodes) </a>' in main
    assert "eval eval/report.json · split test" in main
    assert "v00002" in main
    assert rows(main_of(chromium(f"{run_url}#iter=2"))) == [4, 5, 6, 7]
    chromium(run_url, screenshot="run.png")


def test_the_html_file_renders_with_no_server(trajectory_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "view.html"
    assert write_html(Collection.open(trajectory_file), out, max_episodes=3) == 3
    assert rows(main_of(chromium(out.as_uri()))) == list(range(7))
    assert "embeds 3 of 7 whole episodes" in main_of(chromium(out.as_uri()))
    episode = main_of(chromium(f"{out.as_uri()}#episode=2"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in episode
    assert SCRIPT not in out.read_text()
    assert "is not embedded" in main_of(chromium(f"{out.as_uri()}#episode=5"))
    chromium(out.as_uri(), screenshot="html.png")
