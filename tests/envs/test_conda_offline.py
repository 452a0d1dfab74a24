"""Conda specs for a login node that reaches no channel, for real: the cluster user behind a dead proxy
(tests/cluster/offline.py) builds an environment.yml whose channel (tests/envs/conda_channel.py, served over
HTTP on 127.0.0.1) only the laptop reaches. The laptop solves with its own py-rattler (installed by its uv),
downloads and checks the packages, fetches the pip section's wheels and py-rattler's own wheel from real PyPI
for the host, and uploads them in one command; the host installs from those files only.

The same STAND-INs as tests/envs/test_conda_build.py: the channel's `python` wraps the cluster's own
/usr/bin/python3, its `ipykernel` is a .pth into the cluster's Jupyter env.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpcjup.envs.build import check, ensure
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.spec import read_spec
from hpcjup.errors import ExitCode
from hpcjup.transport import Transport
from tests.cluster.offline import ALIAS
from tests.envs.conda_channel import Seen, conda_spec, make_channel, module, served, standard_packages
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[..., Transport]
#: The conda-meta fields that say which package, from where, with which bytes and dependencies.
FIELDS = ("name", "version", "build", "url", "channel", "md5", "sha256", "size", "depends", "subdir", "fn")
#: A kernel as hpcjup's launcher registers one (argv: the env's python -m ipykernel_launcher), started and asked to
#: run one cell by jupyter_client from the cluster's Jupyter env, on a compute node.
KERNEL = """import json, os, sys, tempfile
from jupyter_client.manager import start_new_kernel
spec = os.path.join(tempfile.mkdtemp(), "kernels", "conda-offline")
os.makedirs(spec)
with open(os.path.join(spec, "kernel.json"), "w") as f:
    json.dump({"argv": [sys.argv[1], "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python",
               "display_name": "conda offline"}, f)
os.environ["JUPYTER_PATH"] = os.path.dirname(os.path.dirname(spec))
km, kc = start_new_kernel(kernel_name="conda-offline", startup_timeout=60)
out = []
reply = kc.execute_interactive(sys.argv[2], timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
kc.stop_channels()
km.shutdown_kernel(now=True)
print("".join(out).strip(), reply["content"]["status"])"""
RECORDS = """import glob, json, sys
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/conda-meta/*.json")):
    with open(path) as f:
        record = json.load(f)
    rows.append({k: record.get(k) for k in sys.argv[2:]})
print(json.dumps(rows))"""


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[str]:
    """This test's channel, served to the laptop (the offline user's proxy is dead: 127.0.0.1 too); its URL."""
    with served(make_channel(tmp_path / "channel", standard_packages())) as url:
        yield url


def _records(transport: Transport, prefix: str) -> list[dict[str, object]]:
    return json.loads(transport.run(["python3", "-c", RECORDS, prefix, *FIELDS]).stdout)  # type: ignore[no-any-return]


def test_an_offline_host_builds_the_same_conda_env_from_the_laptops_upload(
    host: Host, offline_user: str, channel: str, tmp_path: Path
) -> None:
    # A conda six (a distribution) and a pip section: the section's install must leave conda's six alone. (Today's
    # python-dateutil no longer needs six, so this run does not reach pipfilter's overlap: its units test that.)
    spec = conda_spec(tmp_path / "analysis", channel, ["python=3.11", "tinyapp", "six"], ["python-dateutil"])
    offline = host(ALIAS)
    # The host has no conda tool; without hpcjup's py-rattler too (an earlier run's goes), its wheel comes up.
    offline.run(["sh", "-c", 'rm -rf "$HOME"/.hpcjup/tools/rattler-*'])
    seen = Seen()
    built = ensure(offline, spec, TEST_ROOT, progress=seen)
    assert built.built_now
    assert "downloading the conda solver (py-rattler 0.28.0) for the host" in seen.phases, seen.phases
    assert any(
        p.startswith(f"resolving on this laptop (minicluster-offline reaches no channel: {channel}")
        for p in seen.phases
    ), seen.phases
    assert any(p.startswith("uploading 6 conda packages") for p in seen.phases), seen.phases
    assert "downloading the pip section's wheels for the host" in seen.phases, seen.phases
    assert any("tinylib 2.5" in line for line in seen.lines), seen.lines  # the laptop solver's lines
    # Installed on the host from the upload only (its own route to the channel is dead), run on a compute node.
    code = "import sys, tinyapp, tinylib, six, dateutil; print(tinyapp.LIB, six.VERSION, sys.prefix)"
    kernel = ["srun", "-N1", "-t", "2", "/opt/hpcjup-cluster-env/bin/python", "-c", KERNEL, built.python, code]
    out = offline.run(kernel, timeout=300).stdout.split()
    assert out == ["2.5", "1.16.0", built.path, "ok"], out
    assert offline.run(["test", "-e", f"{built.path}/.hpcjup-spec/.conda-offline"], check=False).returncode != 0
    assert leftovers(offline, built.name) == []
    assert check(offline, spec, TEST_ROOT).built
    # The same spec built online by the cluster user (its host reaches the channel): the same packages, from the
    # same URLs with the same hashes and records, and the same lock.
    online = host()
    said = Seen()
    again = ensure(online, spec, TEST_ROOT, progress=said)
    assert again.built_now and again.name == built.name
    assert not any("laptop" in p for p in said.phases), said.phases
    assert _records(offline, built.path) == _records(online, again.path)
    assert [r["name"] for r in _records(offline, built.path)] == [
        "ipykernel",
        "python",
        "six",
        "tinyapp",
        "tinybase",
        "tinylib",
    ]
    lock = offline.read_file(f"{built.path}/.hpcjup-lock.txt")
    assert lock == online.read_file(f"{again.path}/.hpcjup-lock.txt")
    assert f"{channel}/noarch/tinylib-2.5-0.tar.bz2#".encode() in lock and b"# pip python-dateutil==" in lock
    assert b"# pip six" not in lock


def test_a_package_missing_from_the_channel_fails_on_the_laptop_before_any_upload(
    host: Host, offline_user: str, channel: str, tmp_path: Path
) -> None:
    spec = conda_spec(tmp_path / "missing", channel, ["python=3.11", "needsmissing"])
    offline = host(ALIAS)
    seen = Seen()
    with pytest.raises(EnvBuildError) as caught:
        ensure(offline, spec, TEST_ROOT, progress=seen)
    error = caught.value
    assert error.exit_code == ExitCode.ENV_BUILD == 11
    assert "did not resolve on this laptop for the host's platform (linux-64)" in error.message, error.message
    assert "nosuchpackage" in (error.details or ""), error.details  # rattler's own words
    assert "nothing was sent" in (error.hint or "")
    assert not any(p.startswith("uploading") for p in seen.phases), seen.phases
    name = check(offline, spec, TEST_ROOT).name
    assert name and leftovers(offline, name) == []  # the probe's stage went too


def test_an_offline_host_builds_a_specs_conda_lock_exactly(host: Host, offline_user: str, tmp_path: Path) -> None:
    """A spec directory with its conda lock: the laptop downloads exactly the lock's packages (no solve), even
    after the channel gained a newer tinylib that a fresh solve would take."""
    directory = make_channel(tmp_path / "channel", standard_packages())
    with served(directory) as url:
        spec = conda_spec(tmp_path / "first", url, ["python=3.11", "tinyapp"])
        first = ensure(host(), spec, TEST_ROOT)  # online, as the cluster user: its lock
        lock = host().read_file(f"{first.path}/.hpcjup-lock.txt")
        make_channel(directory, [*standard_packages(), module("tinylib", "2.9", ("python", "tinybase >=1.1"))])
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "environment.yml").write_bytes(spec.files["environment.yml"])
        (locked / "conda-linux-64.lock").write_bytes(lock)
        offline = host(ALIAS)
        seen = Seen()
        built = ensure(offline, read_spec(locked), TEST_ROOT, progress=seen)
    assert any("installing the 5 packages of conda-linux-64.lock" in line for line in seen.lines), seen.lines
    version = offline.run([built.python, "-c", "import tinylib; print(tinylib.VERSION)"]).stdout.strip()
    assert version == "2.5"
    assert offline.read_file(f"{built.path}/.hpcjup-lock.txt") == lock
