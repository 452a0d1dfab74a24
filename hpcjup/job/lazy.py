"""Deferred imports: a stand-in module that imports the real one on its first use (standard library only).

Shipped with every job (jupyterboot.py uses it for JupyterLab's start) and used on the laptop
(hpcjup.transport, for paramiko's `invoke`). For a module that an importer takes whole (`import m`,
then `m.f(...)`) or by name (`from m import f`) but rarely calls: each named function of the
stand-in imports the real module on its first call, any other attribute on its first access, and
from then on everything is the real module's. The import system's probe for `__path__` is not a
use (answering it would load the module), so `import m.sub` while the stand-in is in place fails:
name only modules whose importers do not import their submodules. A module that is not installed
is left missing, so its ImportError is what its importers expect.

HPCJUP_LAZY_IMPORTS=0 in the environment turns this off (every import as Python does it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Mapping

OPT_OUT = "HPCJUP_LAZY_IMPORTS"


def stand_in(name: str, functions: tuple[str, ...]) -> types.ModuleType:
    """A module for `name` that imports the real one when it is first used, then passes everything on."""
    stub = types.ModuleType(name, f"hpcjup's stand-in for {name}: imports it on first use (hpcjup/job/lazy.py)")
    real: list[types.ModuleType] = []

    def load() -> types.ModuleType:
        if not real:
            if sys.modules.get(name) is stub:
                del sys.modules[name]
            real.append(importlib.import_module(name))
        return real[0]

    def forward(function: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            return getattr(load(), function)(*args, **kwargs)

        call.__name__ = call.__qualname__ = function
        call.__module__ = name  # pickled by reference, as the real function would be
        return call

    def __getattr__(attr: str) -> object:
        if attr == "__path__":  # `from m import f` asks whether m is a package: not a use
            raise AttributeError(attr)
        return getattr(load(), attr)

    for function in functions:
        setattr(stub, function, forward(function))
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]  # PEP 562: asked for what the module lacks
    return stub


def install(lazy: Mapping[str, tuple[str, ...]], requires: Mapping[str, tuple[str, ...]] | None = None) -> list[str]:
    """A stand-in in sys.modules for each installed, not yet imported module of `lazy` (name -> the
    functions its importers take); the names it stood in for. `requires`: modules a module imports at
    once; if one is missing, the module is left to fail at import as it would (its importers expect that
    ImportError there, not from the first call)."""
    if os.environ.get(OPT_OUT) == "0":
        return []
    done = []
    for name, functions in lazy.items():
        needed = (name, *(requires or {}).get(name, ()))
        if name in sys.modules or any(importlib.util.find_spec(module) is None for module in needed):
            continue
        sys.modules[name] = stand_in(name, functions)
        done.append(name)
    return done
