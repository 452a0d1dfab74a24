"""Start JupyterLab as `python -m jupyterlab` would, minus the import-time work nobody waits for.

Standard library only, shipped beside launcher.py, which runs Jupyter as
    python DIR/jupyterboot.py [JupyterLab's arguments]

jsonschema (through jupyter_events, which every jupyter_server imports) loads all its format
checkers eagerly, and `rfc3987_syntax` builds some 35 Earley parsers at import, for the "iri"
formats that no Jupyter schema uses: 1.4 s of JupyterLab's 3.7-4.3 s start on the 2-core test
node; others report 0.85 s on faster ones (jupyter_server#1559, jsonschema#1428). Each module in LAZY is
stood in for (lazy.py) by a module whose named functions import the real one on their first
call: the same answers, paid for only if they are ever asked.

HPCJUP_LAZY_IMPORTS=0 in the job's environment (a profile's setup line) turns this off.
"""

from __future__ import annotations

import os
import runpy
import sys

# Shipped beside this file; imported before main() puts the working directory in its place on sys.path.
from lazy import install

#: module -> the functions its importers take (lazy.py): jsonschema's `from rfc3987_syntax import is_valid_syntax`.
LAZY = {"rfc3987_syntax": ("is_valid_syntax",)}


def main() -> None:
    # As `python -m` has it: the working directory first on sys.path, not this file's (the job's) directory.
    sys.path[0] = os.getcwd()
    install(LAZY)
    sys.argv[0] = "jupyter-lab"
    runpy.run_module("jupyterlab", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
