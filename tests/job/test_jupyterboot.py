"""jupyterboot.py: JupyterLab started as `python -m jupyterlab`, with rfc3987_syntax deferred.

Each case runs in a child Python (sys.modules is the thing under test), with the cluster-side
environment's real jsonschema + rfc3987_syntax: the deferral happens there and the "iri" format
checks answer as they do without it. The mechanism itself: test_lazy.py.
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


def test_it_travels_with_every_job() -> None:
    assert {"jupyterboot.py", "lazy.py"} <= set(JOB_FILES)


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


def test_jupyter_events_no_longer_builds_the_iri_parsers_at_import(python: str) -> None:
    """The cluster env's jsonschema uses rfc3987_syntax: deferred, it answers the same as when loaded at once."""
    deferred = child(
        python, "done = jupyterboot.lazy_module().install(jupyterboot.LAZY, jupyterboot.REQUIRES)\n" + CHECK_IRI
    )
    at_once = child(
        python,
        "done = jupyterboot.lazy_module().install(jupyterboot.LAZY, jupyterboot.REQUIRES)\n" + CHECK_IRI,
        HPCJUP_LAZY_IMPORTS="0",
    )
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


def test_with_pythonsafepath_sys_path_is_left_as_python_made_it(tmp_path: Path) -> None:
    """PYTHONSAFEPATH (3.11+) puts neither the script's directory nor the cwd on sys.path: lazy.py is still found,
    sys.path[0] (here PYTHONPATH's entry) is kept, and no top-level `lazy` module is left for extensions."""
    if sys.version_info < (3, 11):
        pytest.skip("PYTHONSAFEPATH is Python 3.11's")
    site = tmp_path / "site"
    (site / "jupyterlab").mkdir(parents=True)
    (site / "jupyterlab" / "__init__.py").write_text("")
    (site / "jupyterlab" / "__main__.py").write_text(
        "import json, sys\nprint(json.dumps({'path0': sys.path[0], 'lazy': 'lazy' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, str(BOOT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == {"path0": str(site), "lazy": False}


def test_the_opt_out_starts_jupyterlab_with_python_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BOOT.parent))
    import jupyterproc as launcher  # the launcher's Jupyter process (jupyterproc.py), as the job imports it

    assert launcher.jupyter_start() == [str(BOOT)]
    monkeypatch.setenv("HPCJUP_LAZY_IMPORTS", "0")
    assert launcher.jupyter_start() == [str(BOOT.with_name("lifeline.py")), "-m", "jupyterlab"]


def test_the_real_jupyterlab_answers_through_it(python: str, tmp_path: Path) -> None:
    version = subprocess.run(
        [python, "-c", "import jupyterlab; print(jupyterlab.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = subprocess.run(
        [python, str(BOOT), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == version
