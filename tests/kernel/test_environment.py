"""The kernel environment allowlist (unit test; the real kernel is checked in test_kernel.py)."""

from __future__ import annotations

from pathlib import Path

from nbagent.kernel import KernelConfig
from nbagent.kernel.env_vars import kernel_environment, kernel_process_environment


def test_only_allowlisted_host_variables_pass(tmp_path: Path) -> None:
    host = {
        "PATH": "/usr/bin",
        "LANG": "en_US.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENAI_API_KEY": "sk-secret",
        "HF_TOKEN": "hf_secret",
        "GITHUB_TOKEN": "gh",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "PYTHONPATH": "/somewhere",
        "HTTPS_PROXY": "http://user:pw@proxy",
    }
    env = kernel_environment({"MY_SETTING": "1"}, home=tmp_path, state_dir=tmp_path, host=host)
    assert env["PATH"] == "/usr/bin"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"] == str(tmp_path)
    assert env["MY_SETTING"] == "1"
    for name in (
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "PYTHONPATH",
        "HTTPS_PROXY",
    ):
        assert name not in env
    assert not any("secret" in value for value in env.values())


def test_explicit_extra_wins(tmp_path: Path) -> None:
    env = kernel_environment({"PATH": "/opt/bin", "HOME": "/x"}, home=tmp_path, state_dir=tmp_path, host={})
    assert env["PATH"] == "/opt/bin"
    assert env["HOME"] == "/x"


def test_a_sandboxed_kernel_gets_its_own_home_and_tmp(tmp_path: Path) -> None:
    env = kernel_process_environment(KernelConfig(sandbox=True, env={"TMPDIR": "/x"}), tmp_path)
    assert env["HOME"] == str(tmp_path / "home")
    assert env["TMPDIR"] == "/tmp"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home", "ipython", "matplotlib"]
