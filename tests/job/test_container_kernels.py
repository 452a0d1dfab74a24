"""A kernel whose Python is a command (a container runtime's), on the job side: parsed, probed, its kernel.json.

`env VAR=1 PYTHON` stands in for a container runtime's prefix (`ch-run IMG --` runs the next words the same way);
the real one runs in tests/cli/test_containers.py.
"""

from __future__ import annotations

import shlex
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.job import LAUNCHER_PATH

sys.path.insert(0, str(LAUNCHER_PATH.parent))  # the job files import each other from beside themselves
import kernels


def test_a_command_kernel_is_probed_and_runs_its_words() -> None:
    command = shlex.join(["env", "HPCJUP_IN_CONTAINER=1", sys.executable])
    kernel = kernels.parse_kernel(f"boxed={command}")
    found = kernels.probe([kernel.python], 30, lambda s: None, {})
    seen = found[kernel.python]
    assert seen.error is None and seen.version == ".".join(map(str, sys.version_info[:3]))
    spec = kernels.spec(kernel, seen, {"PATH": "/usr/bin", "DASK_CONFIG": "/d"}, first="/s/bin")
    assert spec["argv"] == [
        "env",
        "HPCJUP_IN_CONTAINER=1",
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert spec["env"] == {"PATH": "/s/bin:/usr/bin", "DASK_CONFIG": "/d"}, "no host prefix or VIRTUAL_ENV for an image"


def test_a_command_that_does_not_run_says_so() -> None:
    kernel = kernels.parse_kernel("boxed=env -u X /nonexistent/python")
    seen = kernels.probe([kernel.python], 30, lambda s: None, {})[kernel.python]
    assert seen.error is not None and "does not run" in seen.error


@pytest.mark.parametrize("text", ["boxed=python3", "boxed=", "boxed=' unclosed", "boxed=rel/python"])
def test_a_kernel_is_an_absolute_python_or_a_command(text: str) -> None:
    with pytest.raises(ValueError, match="absolute path or a command"):
        kernels.parse_kernel(text)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0"), min_size=1), min_size=2, max_size=5))
def test_any_command_reads_back_as_its_words(words: list[str]) -> None:
    kernel = kernels.parse_kernel("k=" + shlex.join(words))
    assert kernel.argv == (words if not kernel.python.startswith("/") else [kernel.python])
