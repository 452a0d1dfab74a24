"""`hpcjup env build` for a login node that reaches no index: the real CLI, a real cluster user behind a dead
proxy (tests/cluster/offline.py), real uv and pip on this laptop fetching from real PyPI; for a conda spec,
the laptop's py-rattler solving against a channel made in the test (tests/envs/conda_channel.py)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run
from tests.cluster.offline import ALIAS, add_to_laptop, ensure_offline_user
from tests.envs.conda_channel import make_channel, served, standard_packages

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]

ROOT = ".hpcjup/envs-test"


@pytest.fixture
def offline_laptop(minicluster: Any, laptop_env: dict[str, str]) -> dict[str, str]:
    """The laptop, with Host `minicluster-offline` for the offline user."""
    ensure_offline_user(minicluster.conf, (minicluster.root / "client_ed25519.pub").read_text())
    add_to_laptop(Path(laptop_env["HOME"]), minicluster.ssh_port)
    return laptop_env


def _spec(tmp_path: Path, requirements: str) -> Path:
    directory = tmp_path / f"spec-{secrets.token_hex(3)}"
    directory.mkdir()
    (directory / "requirements.txt").write_text(f"# {secrets.token_hex(6)}\n{requirements}")
    return directory


def test_env_build_on_an_offline_host(offline_laptop: dict[str, str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, "six\n")
    built = run(["env", "build", str(spec), "--host", ALIAS, "--root", ROOT, "--json"], offline_laptop, timeout=600)
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    assert result["built"] and result["name"].startswith("env-")
    # Plain progress lines (no terminal): the laptop resolved and uploaded, the host installed from the upload.
    assert "reaches no index: https://pypi.org/simple/" in built.stderr, built.stderr
    assert "wheels (" in built.stderr
    listed = json.loads(run(["env", "ls", "--host", ALIAS, "--root", ROOT, "--json"], offline_laptop).stdout)
    assert result["name"] in [row["name"] for row in listed["envs"]]


def test_a_source_only_package_exits_11_naming_it(offline_laptop: dict[str, str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, "docopt\n")
    failed = run(["env", "build", str(spec), "--host", ALIAS, "--root", ROOT], offline_laptop, timeout=600)
    assert failed.returncode == 11, failed.stderr
    assert "docopt publishes no wheel for the host's platform" in failed.stderr


def test_a_conda_spec_on_an_offline_host_builds_from_the_laptop_and_a_missing_package_exits_11(
    offline_laptop: dict[str, str], tmp_path: Path
) -> None:
    """environment.yml whose channel (served on 127.0.0.1) only the laptop reaches: built from the laptop's upload;
    a package the channel lacks fails on the laptop with rattler's words, exit 11, before any upload."""
    with served(make_channel(tmp_path / "channel", standard_packages())) as url:
        specs = []
        for deps in ("tinyapp", "needsmissing"):
            directory = tmp_path / deps
            directory.mkdir()
            text = f"# {secrets.token_hex(6)}\nchannels:\n  - {url}\ndependencies:\n  - python=3.11\n  - {deps}\n"
            (directory / "environment.yml").write_text(text)
            specs.append(directory)
        argv = ["--host", ALIAS, "--root", ROOT]
        built = run(["env", "build", str(specs[0]), *argv, "--json"], offline_laptop, timeout=600)
        assert built.returncode == 0, built.stderr[-3000:]
        assert json.loads(built.stdout)["built"]
        assert f"reaches no channel: {url}" in built.stderr and "uploading 5 conda packages (" in built.stderr
        failed = run(["env", "build", str(specs[1]), *argv], offline_laptop, timeout=600)
    assert failed.returncode == 11, failed.stderr[-3000:]
    assert "did not resolve on this laptop for the host's platform (linux-64)" in failed.stderr
    assert "nosuchpackage" in failed.stderr and "uploading" not in failed.stderr
