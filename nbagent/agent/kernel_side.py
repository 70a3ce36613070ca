"""The kernel-side modules of the agent: what every episode loads into its kernel."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from nbagent.agent import notepad


@functools.cache
def kernel_modules() -> Mapping[str, str]:
    """The kernel-side modules every episode loads (name to source, as `Kernel.ensure_module` takes
    them): the notepad's classes and the tool stubs' module. A pool that forks its kernels loads them
    once in its template (`KernelPool(modules=...)`), so no episode sends them."""
    from nbagent.tools.bridge import kernel_module

    tools_name, tools_source = kernel_module()
    return {notepad.KERNEL_MODULE: notepad.kernel_source(), tools_name: tools_source}
