"""The job contract has one home: no module of hpcjup spells a value of hpcjup/job/contract.py but contract.py.

The job's environment names, end reasons, exit codes and file names are shared by the job (which imports
`contract` from beside itself) and the laptop (`hpcjup.job`). A second spelling drifts (issue 24: two end
reasons were missing from a copy), so instead of comparing copies this test reads every module's source
and fails on any string constant equal to a contract value, and any keyword argument named like one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import hpcjup
import hpcjup.job
from hpcjup.job import LAUNCHER_PATH, contract

ROOT = Path(hpcjup.__file__).parent
CONTRACT = Path(contract.__file__)

#: name -> value of every text the contract fixes (SCHEMA and MIN_SERVER are numbers, checked by their readers).
VALUES = {name: value for name, value in vars(contract).items() if name.isupper() and isinstance(value, str)}

# A contract value that is an everyday word ("dask", "jobs", "token", "idle", "walltime") means other
# things on the laptop too (a JSON field, a click argument, a PBS resource): those are checked in the job
# files, where the contract is written; the others (file names with a dot, reasons with a dash, HPCJUP_*)
# everywhere. Dict keys and subscripts are a document's fields, never a contract name's use.
JOB_DIR = LAUNCHER_PATH.parent


def spellings(path: Path, words: bool = True) -> list[tuple[int, str]]:
    """(line, value) of each contract value spelt in `path` other than as a field name (the everyday
    words too unless `words` is false)."""
    tree = ast.parse(path.read_text(), str(path))
    fields: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            fields.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            fields.add(id(node.slice))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            fields.add(id(node.value))  # a docstring: prose may name the files
    found = []
    values = {value for value in VALUES.values() if words or not (value.isidentifier() and value.islower())}
    environment = {value for name, value in VALUES.items() if name.startswith("ENV_")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in values and id(node) not in fields:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.keyword) and node.arg in environment:
            found.append((node.value.lineno, node.arg))  # dict(env, HPCJUP_X=...)
    return sorted(found)


def modules() -> list[Path]:
    return sorted(path for path in ROOT.rglob("*.py") if path != CONTRACT)


def test_the_contract_has_its_names() -> None:
    """The names the issue asked for are there (the test below would pass on an empty contract)."""
    for name in ("JOB_SCRIPT", "JOB_LOG", "STATE_FILE", "TOKEN_FILE", "CONNECTION_FILE", "USAGE_FILE"):
        assert name in VALUES
    assert sum(name.startswith("ENV_") for name in VALUES) >= 15
    reasons = {value for name, value in VALUES.items() if name.startswith("REASON_")}
    assert set(contract.EXIT_CODES) <= reasons, "only reasons have exit codes (others: 1)"
    assert contract.NORMAL_ENDS <= reasons and {contract.EXIT_CODES[r] for r in contract.NORMAL_ENDS} == {0}


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_spells_a_contract_value(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    found = spellings(path, words=path.parent == JOB_DIR)
    names = {value: name for name, value in VALUES.items()}
    assert not found, "; ".join(f"{rel}:{line} spells {value!r}: use {names[value]}" for line, value in found)


def test_the_check_finds_a_spelling(tmp_path: Path) -> None:
    """The check above can fail: each kind of spelling it looks for is found."""
    source = tmp_path / "copy.py"
    source.write_text(
        '"""Writes state.json."""\n'
        'doc = {"token": 1}\n'
        'print(doc["token"])\n'
        'STATE = "state.json"\n'
        'env = dict(HPCJUP_NODE="n1")\n'
        'reason = "no-dask"\n'
    )
    assert spellings(source) == [(4, "state.json"), (5, "HPCJUP_NODE"), (6, "no-dask")]


def test_the_job_files_import_the_contract_from_beside_themselves() -> None:
    """On the cluster `contract` is a plain module beside the launcher: the job files' names are its names."""
    sys.path.insert(0, str(LAUNCHER_PATH.parent))
    try:
        import contract as shipped
        import endings
    finally:
        sys.path.remove(str(LAUNCHER_PATH.parent))
    assert endings.EXIT_CODES is shipped.EXIT_CODES
    assert {name: getattr(hpcjup.job, name) for name in VALUES} == VALUES
