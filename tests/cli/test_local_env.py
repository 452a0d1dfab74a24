"""`hpcjup start --local --env DIR`: the same spec built on this machine with the same uv and the same rule as on
a cluster (the env `hpcjup env build --local` builds is the one the session uses), JupyterLab from hpcjup's server
environment, the spec's env the default kernel; and the `offline` setting (`--offline/--online` on `env build`).
Real uv, real PyPI, real JupyterLab and kernels; no SSH and no cluster."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import Foreground, http_get, local_env, run
from tests.cli.kernel import run_in_kernel

pytestmark = pytest.mark.one_backend  # --local: no SSH at all

LAPTOP_RESOLVES = "resolving on this laptop"  # the phase of a build whose host reaches no index (envs/build.py)


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One uv cache for the module: each test's laptop HOME is fresh, the wheels need not be fetched again."""
    return str(tmp_path_factory.mktemp("uv-cache"))


@pytest.fixture
def here(laptop_env: dict[str, str], uv_cache: str) -> dict[str, str]:
    return {**local_env(laptop_env), "UV_CACHE_DIR": uv_cache}


def _spec(tmp_path: Path, name: str) -> Path:
    """A small spec directory of its own (a fresh comment: a fresh hash, a fresh env)."""
    spec = tmp_path / name
    spec.mkdir()
    (spec / "requirements.txt").write_text(f"# {secrets.token_hex(4)}\nsix\n")
    return spec


def _config(env: dict[str, str], text: str) -> None:
    path = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _built(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], str]:
    done = run(["env", "build", *args, "--local", "--json"], env, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_start_local_env_runs_the_specs_env_as_the_default_kernel(here: dict[str, str], tmp_path: Path) -> None:
    """The env `env build --local` built is reused, not built again; another --kernel spec is built at start (with
    the `offline` setting: the laptop fetches its packages, as for a cluster that reaches no index)."""
    analysis, more = _spec(tmp_path, "analysis"), _spec(tmp_path, "more")
    ahead, _ = _built([str(analysis)], here)
    _built(["--server"], here)  # the server env online: only `more` goes the offline way below
    _config(here, "[defaults]\noffline = true\n")
    name = f"le-{uuid.uuid4().hex[:6]}"
    argv = ["start", "--local", "--env", str(analysis), "--kernel", f"extra={more}", "--no-dask", "--no-browser"]
    fg = Foreground([*argv, "--idle-timeout", "0", "-n", name, "--json"], here, timeout=900)
    try:
        base, token = f"http://127.0.0.1:{fg.info['local_port']}", fg.info["token"]
        status, body = http_get(f"{base}/api/kernelspecs", token)
        assert status == 200, body
        specs = json.loads(body)
        assert specs["default"] == "analysis" and set(specs["kernelspecs"]) == {"analysis", "extra"}, specs
        python = run_in_kernel(base, token, "import sys, six; print(sys.executable)").strip()
        assert python == f"{ahead['path']}/bin/python"
        extra = specs["kernelspecs"]["extra"]["spec"]["argv"][0]
        assert extra != python and Path(extra).parent.parent.parent == Path(ahead["path"]).parent
    finally:
        stopped = run(["stop", name, "--local"], here)
        _, _, err = fg.finish(timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert f"environment {more}: {LAPTOP_RESOLVES}" in err, err  # `offline = true` reached the build
    assert f"environment {analysis}:" not in err, err  # built ahead by `env build --local`: reused as it is


def test_offline_setting_and_flags_on_env_build(here: dict[str, str], tmp_path: Path) -> None:
    """$HPCJUP_OFFLINE (like the profile key) makes the laptop fetch the packages; --online overrides it, and
    --offline overrides `offline = false`. Each way gives a working env."""
    offline, said = _built([str(_spec(tmp_path, "a"))], {**here, "HPCJUP_OFFLINE": "1"})
    assert offline["built"] and LAPTOP_RESOLVES in said, said
    online, said = _built([str(_spec(tmp_path, "b")), "--online"], {**here, "HPCJUP_OFFLINE": "1"})
    assert online["built"] and LAPTOP_RESOLVES not in said, said
    _config(here, "[defaults]\noffline = false\n")
    flagged, said = _built([str(_spec(tmp_path, "c")), "--offline"], here)
    assert flagged["built"] and LAPTOP_RESOLVES in said, said
    for env in (offline, online, flagged):
        assert Path(env["path"], "lib").exists() and Path(env["path"], ".hpcjup-lock.txt").read_text().count("six==")
