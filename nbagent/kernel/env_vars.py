"""The kernel's environment variables: a short allowlist from the host, never its secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nbagent.kernel.config import KernelConfig

# Host variables a kernel may inherit. Everything else (API keys, tokens, cloud credentials, proxies with
# passwords, PYTHONPATH, ...) stays in the host; pass what the kernel needs through KernelConfig.env.
_INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
_INHERITED_PREFIXES = ("LC_",)


def kernel_environment(
    extra: Mapping[str, str],
    *,
    home: Path,
    state_dir: Path,
    sandbox: bool = False,
    host: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of a kernel process.

    Starts empty, copies the allowlisted host variables (`PATH`, locale, time zone, user name), points
    `HOME`, `IPYTHONDIR` and `MPLCONFIGDIR` at writable places, then applies `extra` (the caller's
    explicit choices win, secrets included: they were asked for). In the `sandbox`, `TMPDIR` is its
    private ``/tmp`` (the host's may not exist there).
    """
    source = os.environ if host is None else host
    env = {
        key: value
        for key, value in source.items()
        if key in _INHERITED or key.startswith(_INHERITED_PREFIXES)
    }
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env["HOME"] = str(home)
    env["IPYTHONDIR"] = str(state_dir / "ipython")
    env["MPLCONFIGDIR"] = str(state_dir / "matplotlib")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    if sandbox:
        env["TMPDIR"] = "/tmp"
    return env


def kernel_process_environment(config: KernelConfig, state_dir: Path) -> dict[str, str]:
    """The environment of one kernel of `config` whose own files live in `state_dir`, with the folders
    it names created: `HOME` is ``state_dir/home`` in the sandbox (the real one is read-only there),
    the user's own otherwise."""
    home = state_dir / "home" if config.sandbox else Path.home()
    for directory in (state_dir / "ipython", state_dir / "matplotlib", home):
        directory.mkdir(parents=True, exist_ok=True)
    return kernel_environment(config.env, home=home, state_dir=state_dir, sandbox=config.sandbox)
