"""The `offline` setting: unset (found out, as before), true or false, from config.toml, a profile or
$HPCJUP_OFFLINE, and carried into the environments a start builds (envplan.Plan.offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcjup.cli.env import offline_setting
from hpcjup.config.profiles import resolve
from hpcjup.errors import UsageError
from hpcjup.session import envplan


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hpcjup" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("", {}, None),  # unset: the build finds out, as before the setting existed
        ("[defaults]\noffline = true\n", {}, True),
        ("[defaults]\noffline = true\n[profiles.p]\noffline = false\n", {"HPCJUP_PROFILE": "p"}, False),
        ("[defaults]\noffline = false\n", {"HPCJUP_OFFLINE": "yes"}, True),
        ("", {"HPCJUP_OFFLINE": "0"}, False),
    ],
)
def test_offline_is_unset_or_a_boolean_from_every_layer(
    tmp_path: Path, text: str, env: dict[str, str], expected: bool | None
) -> None:
    assert resolve({}, profile=None, env=env, path=_config(tmp_path, text)).value("offline") is expected


def test_offline_must_be_true_or_false(tmp_path: Path) -> None:
    path = _config(tmp_path, '[defaults]\noffline = "sometimes"\n')
    with pytest.raises(UsageError, match=r"config.toml:2: 'offline' in \[defaults\] must be true or false"):
        resolve({}, profile=None, env={}, path=path)
    with pytest.raises(UsageError, match=r"\$HPCJUP_OFFLINE='maybe' must be true or false"):
        resolve({}, profile=None, env={"HPCJUP_OFFLINE": "maybe"}, path=_config(tmp_path, ""))


@pytest.mark.parametrize("offline", [None, True, False])
def test_a_starts_plan_carries_the_setting(tmp_path: Path, offline: bool | None) -> None:
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "requirements.txt").write_text("six\n")
    text = "" if offline is None else f"[defaults]\noffline = {str(offline).lower()}\n"
    settings = resolve({"env": str(tmp_path / "spec")}, profile=None, env={}, path=_config(tmp_path, text))
    p = envplan.plan(settings)
    assert p is not None and p.offline is offline
    assert envplan.server_plan(settings).offline is offline  # a bare cluster's server env too


def test_env_build_flag_wins_over_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("HPCJUP_PROFILE", raising=False)
    _config(tmp_path, "[defaults]\noffline = true\n")
    monkeypatch.delenv("HPCJUP_OFFLINE", raising=False)
    assert offline_setting() is True
    assert offline_setting(False) is False  # --online
    monkeypatch.setenv("HPCJUP_OFFLINE", "false")
    assert offline_setting() is False
