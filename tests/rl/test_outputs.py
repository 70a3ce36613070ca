"""`nbagent-train` outputs, as the real console script: a run folder another process holds is refused
naming that process, and a run folder, evaluation folder or `fit --out` that is a file is refused, each in
one line before anything is loaded or trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.trajectories import trajectory

ROOT = Path(__file__).resolve().parents[2]
TRAIN = Path(sys.executable).with_name("nbagent-train")
RECIPE = str(ROOT / "recipes" / "cpu-smoke.yaml")
NO_SERVER = "http://127.0.0.1:9/v1"
HOLD = """import sys, time
from nbagent.output_files import OutputLock
OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(300)
"""


def train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRAIN), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused `nbagent-train` command prints (on stderr, as all its errors)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_rl_refuses_a_run_folder_another_process_holds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        proc = train("rl", "--config", RECIPE, "--run-dir", str(run_dir), "--policy-url", NO_SERVER)
    finally:
        holder.kill()
        holder.wait()
    line = one_error_line(proc)
    assert line.startswith(f"error: {run_dir} is being written by process {holder.pid} (")
    assert not (run_dir / "config.yaml").exists()


def test_rl_refuses_a_run_folder_that_is_a_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.write_text("x")
    line = one_error_line(
        train("rl", "--config", RECIPE, "--run-dir", str(run_dir), "--policy-url", NO_SERVER)
    )
    reason = "it is a file, not a folder; choose another path."
    assert line == f"error: cannot write the run folder to {run_dir}: {reason}"


def test_eval_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.write_text("x")
    line = one_error_line(train("eval", "--config", RECIPE, "--out", str(out), "--policy-url", NO_SERVER))
    assert line.startswith(f"error: cannot write the evaluation to {out}: it is a file")


def test_fit_refuses_an_out_under_a_file(tmp_path: Path) -> None:
    trajectories = tmp_path / "t.jsonl"
    trajectories.write_text(trajectory().to_json_line())
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "run"
    line = one_error_line(train("fit", "-t", str(trajectories), "--model", "m", "--out", str(out)))
    assert line.startswith(f"error: cannot write the run folder to {out}: {tmp_path / 'file.txt'} is a file")
