"""jupyterboot.py: JupyterLab started with slow imports deferred, and the same answers when they are used.

Each case runs in a child Python (sys.modules is the thing under test): a stand-in package made
here, to pin the semantics, and the cluster-side environment's real jsonschema + rfc3987_syntax,
to show the deferral happens there and the "iri" format checks still answer as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpcjup.job import JOB_FILES, LAUNCHER_PATH

BOOT = LAUNCHER_PATH.with_name("jupyterboot.py")
CLUSTER_PYTHON = Path("/opt/hpcjup-cluster-env/bin/python")


def child(python: str, code: str, path: Path | None = None, **env: str) -> dict:
    """Run `code` after `import jupyterboot` in a fresh interpreter; the JSON it prints last."""
    prelude = f"import json, sys; sys.path.insert(0, {str(BOOT.parent)!r}); import jupyterboot\n"
    environ = {k: v for k, v in os.environ.items() if k != "HPCJUP_LAZY_IMPORTS"}
    environ.update(env)
    if path is not None:
        environ["PYTHONPATH"] = str(path)
    out = subprocess.run(
        [python, "-c", prelude + textwrap.dedent(code)], env=environ, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def slowpkg(tmp_path: Path) -> Path:
    """A package that records being imported, with a function and a constant."""
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import sys\nsys.slowpkg_imports = getattr(sys, 'slowpkg_imports', 0) + 1\n"
        "RULES = ('iri',)\n"
        "def is_valid_syntax(rule, text):\n    return rule in RULES and ' ' not in text\n"
    )
    return tmp_path


def test_the_stand_in_imports_the_real_module_on_first_use_only(slowpkg: Path) -> None:
    got = child(
        sys.executable,
        """
        assert jupyterboot.install({"slowpkg": ("is_valid_syntax",)}) == ["slowpkg"]
        from slowpkg import is_valid_syntax  # what jsonschema does at import
        import slowpkg
        before = getattr(sys, "slowpkg_imports", 0)
        answers = [is_valid_syntax("iri", "a:b"), is_valid_syntax("iri", "a b"), is_valid_syntax("uri", "a:b")]
        after_call = sys.slowpkg_imports
        rules = slowpkg.RULES  # other attributes pass through (the stand-in module itself is kept by importers)
        real = sys.modules["slowpkg"]
        print(json.dumps({"before": before, "answers": answers, "after": after_call, "rules": list(rules),
                          "replaced": real is not slowpkg, "total": sys.slowpkg_imports}))
        """,
        slowpkg,
    )
    assert got == {
        "before": 0,
        "answers": [True, False, False],
        "after": 1,
        "rules": ["iri"],
        "replaced": True,
        "total": 1,
    }


def test_a_missing_module_stays_missing_and_the_opt_out_imports_at_once(slowpkg: Path) -> None:
    missing = child(
        sys.executable,
        """
        done = jupyterboot.install({"no_such_module_hpcjup": ("f",)})
        try:
            from no_such_module_hpcjup import f
            found = True
        except ImportError:
            found = False
        print(json.dumps({"done": done, "found": found}))
        """,
    )
    assert missing == {"done": [], "found": False}
    opted_out = child(
        sys.executable,
        """
        done = jupyterboot.install({"slowpkg": ("is_valid_syntax",)})
        from slowpkg import is_valid_syntax
        print(json.dumps({"done": done, "imports": sys.slowpkg_imports}))
        """,
        slowpkg,
        HPCJUP_LAZY_IMPORTS="0",
    )
    assert opted_out == {"done": [], "imports": 1}


def test_it_travels_with_every_job() -> None:
    assert "jupyterboot.py" in JOB_FILES


@pytest.fixture(scope="module")
def cluster_python() -> str:
    if not CLUSTER_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CLUSTER_PYTHON} is required in CI (tests/cluster/install.sh)")
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    return str(CLUSTER_PYTHON)


CHECK_IRI = """
import jupyter_events  # what jupyter_server imports: jsonschema and all its format checkers
loaded_at_import = "rfc3987_syntax.syntax_helpers" in sys.modules
from jsonschema import FormatChecker
checker = FormatChecker()
answers = [checker.conforms(x, f) for x, f in
           [("http://例え.テスト/ä?q=1", "iri"), ("not an iri", "iri"), ("../a/b", "iri-reference"), ("a b", "iri-reference")]]
print(json.dumps({"done": done, "loaded_at_import": loaded_at_import, "answers": answers,
                  "loaded_after": "rfc3987_syntax.syntax_helpers" in sys.modules}))
"""


def test_jupyter_events_no_longer_builds_the_iri_parsers_at_import(cluster_python: str) -> None:
    """The cluster env's jsonschema uses rfc3987_syntax: deferred, it answers the same as when loaded at once."""
    deferred = child(cluster_python, "done = jupyterboot.install()\n" + CHECK_IRI)
    at_once = child(cluster_python, "done = jupyterboot.install()\n" + CHECK_IRI, HPCJUP_LAZY_IMPORTS="0")
    assert at_once["done"] == [] and at_once["loaded_at_import"], "the env no longer has the slow import"
    assert deferred["done"] == ["rfc3987_syntax"] and not deferred["loaded_at_import"]
    assert deferred["answers"] == at_once["answers"] == [True, False, True, False]
    assert deferred["loaded_after"]


def test_main_runs_jupyterlab_as_python_m_does(tmp_path: Path) -> None:
    """sys.path[0] is the working directory (where kernels start), not the job's directory; argv passes on."""
    fake = tmp_path / "jupyterlab"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import json, sys\nprint(json.dumps({'path0': sys.path[0], 'argv': sys.argv[1:], 'name': __name__}))\n"
    )
    out = subprocess.run(
        [sys.executable, str(BOOT), "--no-browser", "--ServerApp.port=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {
        "path0": str(tmp_path),
        "argv": ["--no-browser", "--ServerApp.port=0"],
        "name": "__main__",
    }


def test_the_real_jupyterlab_answers_through_it(cluster_python: str, tmp_path: Path) -> None:
    version = subprocess.run(
        [cluster_python, "-c", "import jupyterlab; print(jupyterlab.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = subprocess.run(
        [cluster_python, str(BOOT), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == version
