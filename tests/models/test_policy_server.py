"""PolicyServer: process handling with stand-in server programs (real processes, real HTTP), and vLLM."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from nbagent.models import OpenAIModel, ensure_smollm2
from nbagent.trajectory import SamplingSettings
from nbagent_train.serving import PolicyServer, PolicyServerError
from nbagent_train.serving.process import failure_reason

HEALTHY_SERVER = """
import http.server, os, signal, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(os.environ["PIDS_FILE"], "w").write(f"{os.getpid()} {child.pid}")
print("argv:", " ".join(args), flush=True)
env = os.environ
print("env:", env.get("VLLM_CPU_KVCACHE_SPACE"), env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING"), flush=True)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

CRASHING_SERVER = """
import sys, time
print("(APIServer pid=1) INFO 11-26 07:14:18 [api_server.py:1] starting", flush=True)
print("(APIServer pid=1) WARNING a warning that mentions OSError: in passing", flush=True)
print("Traceback (most recent call last):", flush=True)
print('  File "x.py", line 1, in <module>', flush=True)
print("RuntimeError: Engine core initialization failed. See root cause above.", flush=True)
print("Traceback (most recent call last):", flush=True)
print("ValueError: The checkpoint has 30 layers", flush=True)
print("but the config says 12.", flush=True)
print("(APIServer pid=1) INFO shutting down", flush=True)
sys.exit(3)
"""


def _program(tmp_path: Path, source: str) -> str:
    """An executable that stands in for `python -m vllm...`: it runs `source`, ignoring the `-m` module."""
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(source))
    launcher = tmp_path / "python"
    launcher.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {script} "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_command_and_environment_for_cpu_with_lora(tmp_path: Path) -> None:
    server = PolicyServer(
        tmp_path, device="cpu", port=8123, max_model_len=2048, enable_lora=True, max_lora_rank=32
    )
    cmd = server.command()
    assert cmd[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path)]
    joined = " ".join(cmd)
    assert f"--served-model-name {tmp_path.name} --host 127.0.0.1 --port 8123" in joined
    assert "--max-model-len 2048 --dtype float32 --enforce-eager" in joined
    assert "--enable-lora --max-lora-rank 32 --max-loras 1" in joined
    assert "--logprobs-mode processed_logprobs" in joined  # the installed vllm-cpu 0.31 has it
    env = server.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"
    assert server.base_url == "http://127.0.0.1:8123/v1"


def test_command_for_gpu_passes_gpu_flags_and_extra_args(tmp_path: Path) -> None:
    server = PolicyServer(
        tmp_path,
        device="gpu",
        port=1,
        served_model_name="policy",
        gpu_memory_utilization=0.5,
        tensor_parallel_size=2,
        logprobs_mode=None,
        extra_args=["--enable-prefix-caching"],
        env={"VLLM_CPU_KVCACHE_SPACE": "4"},
    )
    joined = " ".join(server.command())
    assert "--served-model-name policy" in joined
    assert "--dtype auto" in joined
    assert "--enforce-eager" not in joined
    assert "--gpu-memory-utilization 0.5 --tensor-parallel-size 2" in joined
    assert "--logprobs-mode" not in joined
    assert joined.endswith("--enable-prefix-caching")
    assert server.environment()["VLLM_CPU_KVCACHE_SPACE"] == "4"


def test_failure_reason_prefers_the_root_cause_with_its_continuation() -> None:
    log = textwrap.dedent(CRASHING_SERVER).replace('print("', "").replace('", flush=True)', "")
    assert failure_reason(log) == "ValueError: The checkpoint has 30 layers but the config says 12."
    assert failure_reason("INFO all good\n") is None
    assert failure_reason("api_server.py: error: unrecognized arguments: --bogus") == (
        "api_server.py: error: unrecognized arguments: --bogus"
    )


def test_a_server_dying_at_start_is_explained_in_one_line(tmp_path: Path) -> None:
    server = PolicyServer(
        tmp_path, device="cpu", python=_program(tmp_path, CRASHING_SERVER), log_path=tmp_path / "v.log"
    )
    with pytest.raises(PolicyServerError) as info:
        server.start()
    message = str(info.value)
    assert message == (
        "vLLM exited (code 3) before it was ready: ValueError: The checkpoint has 30 layers but the config "
        f"says 12. (log: {tmp_path / 'v.log'})"
    )
    assert "\n" not in message
    assert not server.running


def test_start_waits_for_health_and_stop_ends_the_whole_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIDS_FILE", str(tmp_path / "pids"))
    server = PolicyServer(tmp_path, device="cpu", enable_lora=True, python=_program(tmp_path, HEALTHY_SERVER))
    with server:
        assert server.running
        assert httpx.get(server.url + "/health").status_code == 200
        assert server.started_in_s is not None
        parent, child = (int(p) for p in (tmp_path / "pids").read_text().split())
        assert _alive(parent)
        assert _alive(child)
    assert _wait_gone(parent)
    assert _wait_gone(child)
    assert not server.running
    log = server.log_path.read_text() if server.log_path else ""
    assert f"--port {server.port}" in log
    assert "env: 1 True" in log


def test_a_server_ignoring_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDS_FILE", str(tmp_path / "pids"))
    monkeypatch.setenv("IGNORE_TERM", "1")
    server = PolicyServer(tmp_path, device="cpu", stop_grace_s=0.5, python=_program(tmp_path, HEALTHY_SERVER))
    server.start()
    parent, _ = (int(p) for p in (tmp_path / "pids").read_text().split())
    server.stop()
    assert _wait_gone(parent)


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path: Path) -> None:
    program = _program(tmp_path, "import time\nprint('loading', flush=True)\ntime.sleep(600)\n")
    server = PolicyServer(
        tmp_path, device="cpu", startup_timeout_s=1.0, python=program, log_path=tmp_path / "v.log"
    )
    with pytest.raises(PolicyServerError, match=r"was not healthy after 1 s \(log: .*v\.log\)"):
        server.start()
    assert not server.running


async def test_cancelling_an_async_start_stops_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    program = _program(
        tmp_path, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    )
    server = PolicyServer(tmp_path, device="cpu", python=program)
    task = asyncio.create_task(server.astart())
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())
    pid_file.unlink()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _wait_gone(pid)


def test_missing_model_folder_fails_before_launching(tmp_path: Path) -> None:
    with pytest.raises(PolicyServerError, match="The model folder /no/such/model does not exist"):
        PolicyServer("/no/such/model", device="cpu").start()


def test_attached_server_that_is_down_times_out_clearly() -> None:
    server = PolicyServer.attach("http://127.0.0.1:9/v1", served_model_name="m")
    server.startup_timeout_s = 0.5
    with pytest.raises(
        PolicyServerError, match=r"vLLM at http://127.0.0.1:9 was not healthy after 0.5 s \(is it running\?\)"
    ):
        server.start()
    with pytest.raises(PolicyServerError, match="cannot be restarted"):
        server.restart()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_vllm_with_a_broken_checkpoint_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": 576}')
    server = PolicyServer(broken, device="cpu", log_path=tmp_path / "vllm.log")
    with pytest.raises(PolicyServerError) as info:
        server.start()
    message = str(info.value)
    assert message.startswith("vLLM exited (code 1) before it was ready: ")
    assert "Error: " in message
    assert message.endswith(f"(log: {tmp_path / 'vllm.log'})")
    assert "\n" not in message


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two vLLM starts: minutes each on a busy 2-core machine
async def test_real_vllm_restarts_on_a_new_checkpoint_at_the_same_address(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_smollm2()
    changed = tmp_path / "step-1"
    net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in net.model.layers[-4:]:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight) * 0.05)
    net.save_pretrained(changed)
    AutoTokenizer.from_pretrained(folder).save_pretrained(changed)

    greedy = SamplingSettings(temperature=0, max_tokens=12)
    messages = [{"role": "user", "content": "Tell me about the moon."}]
    async with PolicyServer(folder, device="cpu", served_model_name="policy", max_model_len=1024) as server:
        url = server.base_url
        before = await OpenAIModel("policy", base_url=url).complete(messages, greedy)
        await server.arestart(changed)
        assert server.base_url == url
        assert server.model == str(changed)
        after = await OpenAIModel("policy", base_url=url).complete(messages, greedy)
    assert after.completion_token_ids != before.completion_token_ids
    assert not server.running


def test_a_forgotten_server_is_stopped_when_garbage_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIDS_FILE", str(tmp_path / "pids"))
    server = PolicyServer(tmp_path, device="cpu", python=_program(tmp_path, HEALTHY_SERVER)).start()
    parent, child = (int(p) for p in (tmp_path / "pids").read_text().split())
    del server
    gc.collect()
    assert _wait_gone(parent)
    assert _wait_gone(child)


def _owner_of_a_server(tmp_path: Path, prelude: str = "") -> tuple[subprocess.Popen[str], int]:
    """A Python process that runs `prelude` then starts a PolicyServer (a stand-in that sleeps); returns
    the process and the server's pid once the server runs."""
    pid_file = tmp_path / "pid"
    program = _program(
        tmp_path, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    )
    script = (
        f"{prelude}from nbagent_train.serving import PolicyServer\n"
        f"PolicyServer({str(tmp_path)!r}, device='cpu', python={program!r}).start()\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return owner, int(pid_file.read_text())


def test_ctrl_c_during_start_stops_the_server(tmp_path: Path) -> None:
    owner, server_pid = _owner_of_a_server(tmp_path)
    owner.send_signal(signal.SIGINT)
    _, err = owner.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    assert _wait_gone(server_pid)


def test_sigterm_to_a_cli_process_stops_its_server(tmp_path: Path) -> None:
    prelude = "from nbagent_train.cli.app import exit_on_sigterm\nexit_on_sigterm()\n"
    owner, server_pid = _owner_of_a_server(tmp_path, prelude)
    owner.send_signal(signal.SIGTERM)
    owner.communicate(timeout=60)
    assert owner.returncode == 128 + signal.SIGTERM
    assert _wait_gone(server_pid)


def test_a_killed_owner_leaves_no_server_behind(tmp_path: Path) -> None:
    owner, server_pid = _owner_of_a_server(tmp_path)
    owner.kill()
    owner.communicate(timeout=60)
    assert _wait_gone(server_pid, timeout_s=20)
