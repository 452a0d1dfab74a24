"""Start JupyterLab as `python -m jupyterlab` would, minus the import-time work nobody waits for.

Standard library only, shipped beside launcher.py, which runs Jupyter as
    python DIR/jupyterboot.py [JupyterLab's arguments]

jsonschema (through jupyter_events, which every jupyter_server imports) loads all its format
checkers eagerly, and `rfc3987_syntax` builds some 35 Earley parsers at import, for the "iri"
formats that no Jupyter schema uses: 1.4 s of JupyterLab's 3.7-4.3 s start on the 2-core test
node; others report 0.85 s on faster ones (jupyter_server#1559, jsonschema#1428). Each module in LAZY is
stood in for by a module whose named functions import the real one on their first call (and
any other attribute, on first access): the same answers, paid for only if they are ever asked.
A module that is not installed stays missing (its ImportError is what jsonschema expects).

HPCJUP_LAZY_IMPORTS=0 in the job's environment (a profile's setup line) turns this off.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Callable

#: module -> the names its importers take with `from MODULE import NAME` (callables).
LAZY: dict[str, tuple[str, ...]] = {"rfc3987_syntax": ("is_valid_syntax",)}
OPT_OUT = "HPCJUP_LAZY_IMPORTS"


def stand_in(name: str, functions: tuple[str, ...]) -> types.ModuleType:
    """A module for `name` that imports the real one when it is first used, then passes everything on."""
    stub = types.ModuleType(name, f"hpcjup's stand-in for {name}: imports it on first use (jupyterboot.py)")
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
        return call

    def __getattr__(attr: str) -> object:
        # The import system asks for __path__, __spec__ and the like: answering those must not load it.
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(load(), attr)

    for function in functions:
        setattr(stub, function, forward(function))
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]  # PEP 562: asked for what the module lacks
    return stub


def install(lazy: dict[str, tuple[str, ...]] = LAZY) -> list[str]:
    """Put a stand-in in sys.modules for each installed, not yet imported module of `lazy`; their names."""
    if os.environ.get(OPT_OUT) == "0":
        return []
    done = []
    for name, functions in lazy.items():
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        sys.modules[name] = stand_in(name, functions)
        done.append(name)
    return done


def main() -> None:
    # As `python -m` has it: the working directory first on sys.path, not this file's (the job's) directory.
    sys.path[0] = os.getcwd()
    install()
    sys.argv[0] = "jupyter-lab"
    runpy.run_module("jupyterlab", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
