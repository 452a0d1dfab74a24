"""Start JupyterLab as `python -m jupyterlab` would, minus the import-time work nobody waits for.

Standard library only, shipped beside launcher.py, which runs Jupyter as
    python DIR/jupyterboot.py [JupyterLab's arguments]

jsonschema (through jupyter_events, which every jupyter_server imports) loads all its format
checkers eagerly, and `rfc3987_syntax` builds some 35 Earley parsers at import, for the "iri"
formats that no Jupyter schema uses: 1.4 s of JupyterLab's 3.7-4.3 s start on the 2-core test
node; others report 0.85 s on faster ones (jupyter_server#1559, jsonschema#1428). Each module in LAZY is
stood in for (lazy.py) by a module whose named functions import the real one on their first
call: the same answers, paid for only if they are ever asked.

HPCJUP_LAZY_IMPORTS=0 in the job's environment (a profile's setup line) turns this off: the launcher
then runs `python -m jupyterlab` itself.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import types

#: module -> the functions its importers take (lazy.py): jsonschema's `from rfc3987_syntax import is_valid_syntax`.
LAZY = {"rfc3987_syntax": ("is_valid_syntax",)}
#: what each imports at once: without lark, rfc3987_syntax fails at import, which jsonschema expects there.
REQUIRES = {"rfc3987_syntax": ("lark",)}


def lazy_module(name: str = "lazy") -> types.ModuleType:
    """lazy.py (or another job file) beside this file, loaded by its path under a private name: sys.path stays as
    Python made it (PYTHONSAFEPATH puts no script directory there) and Jupyter's extensions see no top-level `lazy`."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_hpcjup_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    # As `python -m` has it: the working directory first on sys.path where Python put this file's (the
    # job's) directory; with PYTHONSAFEPATH it put neither, and sys.path[0] is someone's (PYTHONPATH).
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.getcwd()
    lazy_module("lifeline").arm()  # Jupyter ends with the launcher, even one killed outright
    lazy_module().install(LAZY, REQUIRES)
    runpy.run_module("jupyterlab", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
