"""`nbagent run`, `show` and `export`: against a real HTTP endpoint (the fake OpenAI server), on bad
endpoints, and as a subprocess on the embedded local model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.cli.options import EXIT_ANSWERED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NO_ANSWER
from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer, script_responder

STEPS = [
    "<think>Multiply.</think>\n<code>\nx = 17 * 23\nprint(x)\n</code>",
    "<think>It printed 391.</think>\n<code>\nsubmit_final_answer(x)\n</code>",
]
ENDPOINT_ENV = ("NBAGENT_BASE_URL", "OPENAI_BASE_URL", "NBAGENT_MODEL", "NBAGENT_API_KEY", "OPENAI_API_KEY")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(script_responder(STEPS), model="fake-model") as srv:
        yield srv


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # usage errors are boxed and wrapped at the terminal width
    return CliRunner()


def test_run_against_an_endpoint(server: FakeOpenAIServer, runner: CliRunner, tmp_path: Path) -> None:
    nb_path, traj_path = tmp_path / "run.ipynb", tmp_path / "t.jsonl"
    args = ["run", "What is 17 * 23?", "--base-url", server.base_url, "--notebook", str(nb_path)]
    result = runner.invoke(app, [*args, "--trajectory", str(traj_path), "--temperature", "0.5"])
    assert result.exit_code == EXIT_ANSWERED, result.output
    out = result.output
    assert "Model: fake-model at" in out
    assert "Step 1" in out
    assert "x = 17 * 23" in out
    assert "391" in out
    assert f"notebook: {nb_path}" in out
    nbformat.validate(nbformat.read(str(nb_path), as_version=4))
    (traj,) = read_trajectories(traj_path)
    assert traj.termination is Termination.SUBMITTED
    assert traj.final_answer == "391"
    assert traj.model.sampling.temperature == 0.5
    assert traj.model.sampling.stop == ["</code>"]
    body = server.requests[0]
    assert body["model"] == "fake-model"
    assert body["stop"] == ["</code>"]


def test_run_json_and_quiet(server: FakeOpenAIServer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["run", "q", "--base-url", server.base_url, "--no-save", "--json", "--quiet"])
    assert result.exit_code == EXIT_ANSWERED, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["answer"] == "391"
    assert payload["termination"] == "submitted"
    assert payload["termination_detail"]
    assert payload["notebook"] is None
    assert "Step 1" not in result.output


def test_run_without_answer_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    looping = [STEPS[0]]
    with FakeOpenAIServer(script_responder(looping)) as srv:
        result = runner.invoke(app, ["run", "q", "--base-url", srv.base_url, "--max-steps", "2", "--no-save"])
    assert result.exit_code == EXIT_NO_ANSWER, result.output
    assert "No answer (max_steps). The step limit (2 steps) was reached without an answer." in result.output


def test_unreachable_endpoint(runner: CliRunner) -> None:
    result = runner.invoke(app, ["run", "q", "--base-url", "http://127.0.0.1:9/v1", "--no-save"])
    assert result.exit_code == EXIT_ERROR
    assert "Cannot reach the endpoint http://127.0.0.1:9/v1" in result.output


def test_unknown_model(server: FakeOpenAIServer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["run", "q", "--base-url", server.base_url, "--model", "gpt-9", "--no-save"])
    assert result.exit_code == EXIT_ERROR
    assert "does not serve the model 'gpt-9'; it serves: fake-model" in result.output


def test_endpoint_from_the_environment(
    server: FakeOpenAIServer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    result = runner.invoke(app, ["run", "q", "--no-save"])
    assert result.exit_code == EXIT_ANSWERED, result.output
    assert "No endpoint configured" not in result.output


def test_tool_option(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cli_tools_for_test.py").write_text(
        "def double(x: int) -> int:\n    '''Twice x.'''\n    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    steps = ["<think>t</think><code>y = double(21)\nprint(y)\nsubmit_final_answer(y)</code>"]
    with FakeOpenAIServer(script_responder(steps)) as srv:
        args = ["run", "q", "--base-url", srv.base_url, "--tool", "cli_tools_for_test:double"]
        result = runner.invoke(app, [*args, "--trajectory", str(tmp_path / "t.jsonl"), "--verbose"])
        assert "def double(x: int) -> int" in srv.requests[0]["messages"][0]["content"]
    assert result.exit_code == EXIT_ANSWERED, result.output
    assert "tool double(21,) -> 42" in result.output
    bad = runner.invoke(app, ["run", "q", "--base-url", "http://127.0.0.1:9/v1", "--tool", "nope"])
    assert bad.exit_code != 0


def test_show_and_export(server: FakeOpenAIServer, runner: CliRunner, tmp_path: Path) -> None:
    traj_path = tmp_path / "t.jsonl"
    for _ in range(2):
        runner.invoke(app, ["run", "q", "--base-url", server.base_url, "--trajectory", str(traj_path)])
    shown = runner.invoke(app, ["show", str(traj_path), "--index", "-1"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("Step 2") == 1
    assert "answer" in shown.output
    exported = runner.invoke(app, ["export", str(traj_path), "--format", "openai"])
    lines = exported.stdout.strip().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["messages"][1] == {"role": "user", "content": "Task: q"}
    out_dir = tmp_path / "nbs"
    result = runner.invoke(app, ["export", str(traj_path), "-f", "ipynb", "-o", str(out_dir), "-i", "0"])
    assert result.exit_code == 0, result.output
    (notebook,) = out_dir.glob("*.ipynb")
    nbformat.validate(nbformat.read(str(notebook), as_version=4))
    sharegpt = tmp_path / "s.jsonl"
    runner.invoke(app, ["export", str(traj_path), "-f", "sharegpt", "-o", str(sharegpt)])
    assert json.loads(sharegpt.read_text().splitlines()[1])["conversations"][2]["from"] == "gpt"
    missing = runner.invoke(app, ["show", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output


@pytest.mark.slow
@pytest.mark.timeout(900)  # the subprocess's own bound: a loaded 2-core machine runs the model slowly
def test_run_on_the_embedded_model_as_a_subprocess(tmp_path: Path) -> None:
    """The README's demo: no endpoint, the embedded agent (SmolLM2-135M-Instruct with nbagent's trained
    adapter) in-process, a notebook that opens, and the answer 391 (greedy, so the run is repeatable)."""
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_ENV}
    nb_path, traj_path = tmp_path / "demo.ipynb", tmp_path / "t.jsonl"
    cmd = [sys.executable, "-m", "nbagent.cli", "run", "What is 17 * 23? Use Python.", "--max-steps", "3"]
    proc = subprocess.run(
        [*cmd, "--temperature", "0", "--notebook", str(nb_path), "--trajectory", str(traj_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert "No endpoint configured" in out
    assert "SmolLM2-135M-Instruct with nbagent's trained adapter" in out
    assert "Step 1" in out
    (traj,) = read_trajectories(traj_path)
    assert proc.returncode == EXIT_ANSWERED, out
    assert traj.termination is Termination.SUBMITTED
    assert str(traj.final_answer) == "391"
    assert traj.model.provider == "local"
    assert traj.model.model == "SmolLM2-135M-Instruct+embedded-agent"
    first = traj.steps[0]
    assert first.model_call.prefill == "```python\n"
    assert first.model_call.completion_token_ids
    assert first.model_call.completion_logprobs
    assert len(first.model_call.completion_logprobs) == len(first.model_call.completion_token_ids)
    assert first.action.kind == "code"  # with the prefill, the model starts inside a code block
    assert "391" in first.observation  # it computed the answer, read it, then submitted it
    assert "submit_final_answer" in (traj.steps[-1].action.code or "")
    nbformat.validate(nbformat.read(str(nb_path), as_version=4))
    assert f"notebook: {nb_path}" in out


@pytest.mark.slow
def test_local_model_takes_an_adapter_folder_or_the_bare_base(tmp_path: Path) -> None:
    """`--local-model` runs a LoRA adapter folder on its base, and an HF folder (here the bare base) alone."""
    from nbagent.models.local import SHIPPED_ADAPTER, ensure_smollm2

    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_ENV}
    for folder, name in ((SHIPPED_ADAPTER, "an adapter on its base"), (ensure_smollm2(), "in-process)")):
        traj_path = tmp_path / f"{folder.name}.jsonl"
        args = ["What is 2 + 2?", "--max-steps", "1", "--local-model", str(folder), "--temperature", "0"]
        proc = subprocess.run(
            [sys.executable, "-m", "nbagent.cli", "run", *args, "--trajectory", str(traj_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode in (EXIT_ANSWERED, EXIT_NO_ANSWER), out
        assert f"local model {folder} (in-process" in " ".join(out.split()), out
        assert name in " ".join(out.split())
        (traj,) = read_trajectories(traj_path)
        assert traj.model.provider == "local"
    bad = subprocess.run(
        [sys.executable, "-m", "nbagent.cli", "run", "q", "--local-model", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == EXIT_ERROR
    assert "expected a Hugging Face model folder or a PEFT adapter folder" in " ".join(bad.stderr.split())
    assert "Traceback" not in bad.stdout + bad.stderr


def test_context_budget_follows_the_model_length() -> None:
    from nbagent.cli.options import AgentFlags
    from nbagent.models.selection import ModelChoice
    from nbagent.models.testing import ScriptedModel

    def settings(choice: ModelChoice, max_tokens: int | None) -> dict[str, object]:
        flags = AgentFlags(max_steps=3, max_tokens=max_tokens, cell_timeout=5, episode_timeout=60)
        return flags.agent_settings(choice)

    endpoint = ModelChoice(ScriptedModel([]), "m", local=False, context_tokens=4096)
    assert settings(endpoint, 300)["context_budget_tokens"] == 3796
    assert settings(endpoint, None)["context_budget_tokens"] == 4096 - 3072  # the agent's default reply
    assert settings(ModelChoice(ScriptedModel([]), "m", local=False), None)["context_budget_tokens"] is None
    local = settings(ModelChoice(ScriptedModel([]), "m", local=True, context_tokens=8192), None)
    assert local["context_budget_tokens"] == 8192 - 200
    assert local["action_format"] == "markdown"
    assert local["prefill"] == "```python\n"
    assert local["reminder"] is not None


@pytest.mark.slow
def test_ctrl_c_saves_the_partial_trajectory(tmp_path: Path) -> None:
    marker = tmp_path / "cell-started"
    steps = [
        "<think>a</think><code>print('first')</code>",
        f"<think>b</think><code>open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(120)</code>",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_ENV}
    traj_path, nb_path = tmp_path / "t.jsonl", tmp_path / "run.ipynb"
    with FakeOpenAIServer(script_responder(steps)) as srv:
        cmd = [sys.executable, "-m", "nbagent.cli", "run", "q", "--base-url", srv.base_url]
        proc = subprocess.Popen(
            [*cmd, "--trajectory", str(traj_path), "--notebook", str(nb_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(1200):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, out
    (traj,) = read_trajectories(traj_path)
    assert traj.termination is Termination.CANCELLED
    assert len(traj.steps) == 1
    assert traj.steps[0].observation == "<output>\nfirst\n</output>"
    nbformat.validate(nbformat.read(str(nb_path), as_version=4))
