"""The code the host sends into a kernel for its own use: module loading, nbagent's set-up, the reset.

nbagent's kernel-side module (the source of `nbagent.kernel.inkernel`) is loaded as ``_nbagent_kernel``
with `kernel_module_code` and installed after every start and reset.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

BOOT_MODULE = "_nbagent_kernel"
INSTALL_CODE = f"__import__({BOOT_MODULE!r}).install()\n"
"""Kernel code that (re-)installs nbagent's hooks from the loaded `BOOT_MODULE`."""


def kernel_module_code(name: str, source: str) -> str:
    """Kernel code that creates the module `name` from `source` unless it exists, outside the user
    namespace (so ``%reset`` keeps it), with its source registered for tracebacks. It leaves no names
    in the user namespace."""
    filename = f"<{name}>"
    loader = (
        "import linecache, sys, types\n"
        f"if {name!r} not in sys.modules:\n"
        f"    linecache.cache[{filename!r}] = (len(SOURCE), None, SOURCE.splitlines(True), {filename!r})\n"
        f"    module = types.ModuleType({name!r})\n"
        f"    module.__file__ = {filename!r}\n"
        f"    sys.modules[{name!r}] = module\n"
        f"    exec(compile(SOURCE, {filename!r}, 'exec'), module.__dict__)\n"
    )
    return f"exec({loader!r}, {{'SOURCE': {source!r}}})\n"


def import_code(module: str) -> str:
    """Kernel code that imports `module` (a dotted name) and leaves no names in the user namespace."""
    return f"exec({f'import {module}'!r}, {{}})\n"


@functools.cache
def boot_module_code() -> str:
    """Kernel code that loads `BOOT_MODULE` from the source of `nbagent.kernel.inkernel`."""
    source = resources.files("nbagent.kernel").joinpath("inkernel.py").read_text(encoding="utf-8")
    return kernel_module_code(BOOT_MODULE, source)


# Clears the user's names (IPython's own hidden ones stay) and the output cache. About half the cost of
# `%reset -f`, which also runs a full garbage collection and rebuilds the namespace (measured: 25 ms vs
# 49 ms under load); the pool runs this between every two episodes.
_RESET_CODE = (
    "def _nb_reset(ip):\n"
    "    ns = ip.user_ns\n"
    "    for name in [n for n in ns if n not in ip.user_ns_hidden and not n.startswith('__')]:\n"
    "        del ns[name]\n"
    "    ns.get('Out', {{}}).clear()\n"
    "_nb_reset(get_ipython())\n"
    "import os as _nb_os\n_nb_os.chdir({workspace!r})\ndel _nb_os\n"
)


def reset_code(workspace: Path) -> str:
    """Kernel code that clears the user namespace and goes back to `workspace`."""
    return _RESET_CODE.format(workspace=str(workspace))
