"""Profiles, precedence, site presets and the `profile`/`sites` commands, as a user meets them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner

from hpcjup.cli.profile import parse_assignment, typed_options
from hpcjup.config.environment import has_jupyterlab
from hpcjup.config.profiles import KEYS, config_path, load_config, resolve
from hpcjup.config.sites import list_sites, load_site
from hpcjup.config.writer import save_profile, toml_value
from hpcjup.errors import ExitCode, UsageError
from tests.config.test_environment import bin_with_python3, fake_jupyter_python

# Registers the new commands for a real `hpcjup` process until the lead adds them to COMMANDS.
REGISTER = (
    "import sys; from hpcjup.cli import COMMANDS, main; "
    "[COMMANDS.setdefault(n, (m, 'command', h)) for n, m, h in "
    "(('profile', 'profile', 'Profiles.'), ('sites', 'sites', 'Site presets.'), ('doctor', 'doctor', 'Checks.'))]; "
    "main(sys.argv[1:])"
)


def hpcjup(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with the new commands registered."""
    return subprocess.run(
        [sys.executable, "-c", REGISTER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "hpcjup" / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- precedence -----------------------------------------------------------------------------------

LAYERED = """\
[defaults]
partition = "batch"
account = "dflt"
time = "30"
mem = "8G"

[profiles.work]
host = "juwels"
partition = "booster"
time = "2:00:00"
modules = ["GCC", "Python"]
"""


def test_each_layer_wins_over_the_ones_below(config: Path) -> None:
    write(config, LAYERED)
    env = {"HPCJUP_TIME": "45", "HPCJUP_MEM": "16G"}
    r = resolve({"mem": "32G"}, profile="work", env=env, path=config)
    assert (r.value("mem"), r.source("mem")) == ("32G", "command line")
    assert (r.value("time"), r.source("time")) == ("45", "environment ($HPCJUP_TIME)")
    assert r.value("partition") == "booster" and r.source("partition") == f"profile work ({config}:9)"
    assert r.value("account") == "dflt" and r.source("account") == f"[defaults] ({config}:3)"
    assert (r.value("nodes"), r.source("nodes")) == (1, "built-in")
    assert r.value("modules") == ("GCC", "Python")
    assert r.value("cpus") is None and r.source("cpus") is None


def test_site_preset_sits_between_defaults_and_builtins(config: Path) -> None:
    write(config, '[defaults]\nsite = "juwels"\ntime = "20"\n')
    r = resolve({}, profile=None, env={}, path=config)
    assert r.site is not None and r.site.name == "juwels"
    assert r.value("time") == "20"  # [defaults] beats the site
    assert r.value("partition") == "develbooster" and r.source("partition").startswith("site juwels (")
    assert r.source("partition").endswith(f"juwels.toml:{_line_of(r.site.path, 'partition = ')})")
    assert "Stages/2025" in r.value("modules")


def test_profile_from_environment_and_flag(config: Path) -> None:
    write(config, LAYERED + '\n[profiles.other]\nhost = "jureca"\n')
    assert resolve({}, profile=None, env={"HPCJUP_PROFILE": "other"}, path=config).value("host") == "jureca"
    assert resolve({}, profile="work", env={"HPCJUP_PROFILE": "other"}, path=config).value("host") == "juwels"
    with pytest.raises(UsageError, match=r"No profile 'nope' \(from \$HPCJUP_PROFILE\).*profiles there: work, other"):
        resolve({}, profile=None, env={"HPCJUP_PROFILE": "nope"}, path=config)


def test_resolved_is_frozen_and_serialisable(config: Path) -> None:
    write(config, LAYERED)
    r = resolve({}, profile="work", env={}, path=config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.profile = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.settings["host"] = None  # type: ignore[index]
    assert json.loads(json.dumps(r.as_dict()))["modules"] == ["GCC", "Python"]
    assert r.describe()["host"] == {"value": "juwels", "source": "profile work", "location": f"{config}:8"}
    assert r.resources().partition == "booster"
    with pytest.raises(KeyError):
        r.value("partiton")


def test_env_values_are_typed_and_empty_ones_ignored(config: Path) -> None:
    r = resolve({}, profile=None, env={"HPCJUP_NODES": "3", "HPCJUP_GPU": "yes", "HPCJUP_HOST": "  "}, path=config)
    assert (r.value("nodes"), r.value("gpu"), r.value("host")) == (3, True, None)
    with pytest.raises(UsageError, match=r"\$HPCJUP_NODES='two' must be an integer"):
        resolve({}, profile=None, env={"HPCJUP_NODES": "two"}, path=config)
    with pytest.raises(UsageError, match=r"\$HPCJUP_SSH.*not one of auto, openssh, paramiko"):
        resolve({}, profile=None, env={"HPCJUP_SSH": "putty"}, path=config)


def test_a_bad_value_names_its_file_and_line(config: Path) -> None:
    write(config, '[profiles.p]\nhost = "h"\npartition = "a b"\n')
    with pytest.raises(UsageError, match=rf"partition 'a b' from profile p \({config}:3\) is not valid"):
        resolve({}, profile="p", env={}, path=config)
    write(config, '[defaults]\nidle_timeout = "soon"\n')
    with pytest.raises(UsageError, match=rf"idle_timeout \(from \[defaults\] \({config}:2\)\)"):
        resolve({}, profile=None, env={}, path=config)


def test_site_requires_an_account(config: Path) -> None:
    r = resolve({"site": "jureca"}, profile=None, env={}, path=config)
    with pytest.raises(UsageError, match="JURECA-DC needs an account") as exc:
        r.check_site()
    assert "--account" in (exc.value.hint or "")
    resolve({"site": "jureca", "account": "proj"}, profile=None, env={}, path=config).check_site()


# -- errors in config.toml --------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line(config: Path) -> None:
    write(config, '[profiles.a]\nhost = "x"\npartition = booster\n')
    with pytest.raises(UsageError, match=rf"{config} is not valid TOML: .*line 3") as exc:
        load_config(config)
    assert exc.value.exit_code == ExitCode.USAGE


def test_unknown_key_names_file_line_key_and_suggestion(config: Path) -> None:
    write(config, '# my settings\n[profiles.a]\nhost = "x"\n\npartiton = "booster"\n')
    with pytest.raises(UsageError, match=rf"{config}:5: unknown key 'partiton' in \[profiles.a\]") as exc:
        load_config(config)
    assert "Did you mean 'partition'?" in (exc.value.hint or "")


def test_wrong_type_names_file_line_and_key(config: Path) -> None:
    write(config, '[defaults]\nnodes = "2"\n')
    with pytest.raises(UsageError, match=rf"{config}:2: 'nodes' in \[defaults\] must be an integer, not a string"):
        load_config(config)
    write(config, '[defaults]\nmodules = "GCC Python"\n')
    with pytest.raises(UsageError, match=r"'modules' in \[defaults\] must be a list of strings e.g. \[\"a\", \"b\"\]"):
        load_config(config)
    write(config, '[profiles.p]\nhost = "x"\nnodes = 0\n')
    with pytest.raises(UsageError, match=rf"{config}:3: 'nodes' in \[profiles.p\] is 0: it must be at least 1"):
        load_config(config)
    write(config, 'host = "x"\n')
    with pytest.raises(UsageError, match=rf"{config}:1: unknown key 'host' at the top level") as exc:
        load_config(config)
    assert "[defaults]" in (exc.value.hint or "")


def test_numbers_are_accepted_where_people_write_them(config: Path) -> None:
    write(config, "[defaults]\ntime = 90\ngpus = 4\nidle_timeout = 3600\n")
    r = resolve({}, profile=None, env={}, path=config)
    assert (r.value("time"), r.value("gpus"), r.value("idle_timeout")) == ("90", "4", "3600")


def test_config_path_follows_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert config_path() == tmp_path / "xdg" / "hpcjup" / "config.toml"


# -- sites -------------------------------------------------------------------------------------------


def test_builtin_sites_load_and_say_where_their_facts_come_from(tmp_path: Path) -> None:
    sites = {site.name: site for site in list_sites(tmp_path)}
    assert {"juwels", "jureca"} <= set(sites)
    juwels = sites["juwels"]
    assert juwels.account_required and juwels.builtin
    assert juwels.source.startswith("https://apps.fz-juelich.de/jsc/")
    assert "juwels-booster.fz-juelich.de" in juwels.hosts and "develbooster" in juwels.partitions
    text = Path(juwels.path).read_text()
    assert text.startswith("#") and "JSC user documentation" in text.split("\n\n")[0]


def test_user_site_overrides_and_adds(tmp_path: Path) -> None:
    write(tmp_path / "sites" / "juwels.toml", 'description = "mine"\nsource = "me"\n[defaults]\npartition = "batch"\n')
    write(tmp_path / "sites" / "mybox.toml", 'description = "lab"\nsource = "me"\n[defaults]\nhost = "mybox"\n')
    assert load_site("juwels", tmp_path).defaults["partition"] == "batch"
    assert load_site("mybox", tmp_path).defaults["host"] == "mybox"
    with pytest.raises(UsageError, match=r"No site preset 'nope'; known sites: ") as refused:
        load_site("nope", tmp_path)
    known = refused.value.message.split("known sites: ", 1)[1].rstrip(".").split(", ")
    assert {"derecho", "jureca", "juwels", "mybox"} <= set(known) and known == sorted(known)


def test_bad_site_file_is_reported_with_its_line(tmp_path: Path) -> None:
    write(tmp_path / "sites" / "x.toml", 'description = "d"\nsource = "s"\n[defaults]\nsite = "y"\n')
    with pytest.raises(UsageError, match=r"x.toml:4: unknown key 'site' in \[defaults\]"):
        load_site("x", tmp_path)
    write(tmp_path / "sites" / "x.toml", 'description = "d"\n')
    with pytest.raises(UsageError, match="lacks source"):
        load_site("x", tmp_path)


# -- writing profiles --------------------------------------------------------------------------------


def test_save_profile_keeps_the_rest_of_the_file(config: Path) -> None:
    original = '# my cluster settings\n[defaults]\naccount = "proj"  # charged\n\n[profiles.old]\nhost = "a"\n'
    write(config, original)
    save_profile("new", {"host": "juwels", "modules": ["GCC", "Python"], "nodes": 2, "gpu": True}, path=config)
    text = config.read_text()
    assert text.startswith(original)
    assert '[profiles.new]\nhost = "juwels"\nnodes = 2\nmodules = ["GCC", "Python"]\ngpu = true\n' in text
    with pytest.raises(UsageError, match="already exists"):
        save_profile("new", {"host": "x"}, path=config)
    save_profile("old", {"host": "b"}, path=config, replace=True)
    loaded = load_config(config)
    assert loaded.profiles["old"] == {"host": "b"} and loaded.profiles["new"]["nodes"] == 2
    assert "# my cluster settings" in config.read_text() and "# charged" in config.read_text()


def test_replacing_a_profile_keeps_its_place_and_the_comments_around_it(config: Path) -> None:
    original = (
        '# laptop-wide settings\n[defaults]\nhost = "juwels"\n\n'
        '# GPU work\n[profiles.gpu]\npartition = "booster"\n\n'
        '# the one for big memory, ask Anna before changing\n[profiles.bigmem]\npartition = "mem"  # 1 TB nodes\n'
    )
    write(config, original)
    save_profile("gpu", {"partition": "develbooster", "time": "30"}, path=config, replace=True)
    assert config.read_text() == original.replace(
        'partition = "booster"\n', 'partition = "develbooster"\ntime = "30"\n'
    )
    save_profile("bigmem", {"partition": "largemem"}, path=config, replace=True)  # the last table in the file
    assert config.read_text().endswith(
        '# the one for big memory, ask Anna before changing\n[profiles.bigmem]\npartition = "largemem"\n'
    )


def test_a_profile_name_with_a_trailing_newline_is_refused(config: Path) -> None:
    with pytest.raises(UsageError, match=r"Profile name 'lab\\n' is not valid"):
        save_profile("lab\n", {"host": "h"}, path=config)
    assert not config.exists()


def test_save_profile_new_file_is_private(config: Path) -> None:
    save_profile("p", {"host": "h"}, path=config)
    assert config.stat().st_mode & 0o777 == 0o600
    assert config.parent.stat().st_mode & 0o777 == 0o700


def test_save_profile_keeps_an_existing_files_mode_whatever_the_umask(config: Path) -> None:
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[defaults]\n")
    os.chmod(config, 0o660)  # shared with a group on purpose: the writer must not change that
    old = os.umask(0o022)
    try:
        save_profile("p", {"host": "h"}, path=config)
    finally:
        os.umask(old)
    assert config.stat().st_mode & 0o777 == 0o660 and "[profiles.p]" in config.read_text()


def test_save_profile_refuses_what_would_not_load(config: Path) -> None:
    with pytest.raises(UsageError, match="not valid"):
        save_profile("bad name", {"host": "h"}, path=config)
    with pytest.raises(UsageError, match="unknown key 'colour'"):
        save_profile("p", {"colour": "blue"}, path=config)
    assert not config.exists()


@pytest.mark.parametrize("value", ["plain", 'with "quotes" and \\ backslash', "tab\tnew\nline\x7f\x01", "ümlaut ✓", ""])
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    assert tomllib.loads(f"v = {toml_value([value, 'x'])}")["v"] == [value, "x"]


def test_parse_assignment() -> None:
    assert parse_assignment("modules=Stages/2025, GCC,Python") == ("modules", ["Stages/2025", "GCC", "Python"])
    assert parse_assignment('binds=["/p/a,b", "/q"]') == ("binds", ["/p/a,b", "/q"])
    assert parse_assignment("worker-cores=4") == ("worker_cores", 4)
    assert parse_assignment("module_purge=yes") == ("module_purge", True)
    assert parse_assignment("setup=export A=1") == ("setup", ["export A=1"])
    with pytest.raises(UsageError, match="Unknown setting 'partiton'") as exc:
        parse_assignment("partiton=x")
    assert "Did you mean 'partition'?" in (exc.value.hint or "")
    with pytest.raises(UsageError, match="not KEY=VALUE"):
        parse_assignment("host")


def test_typed_options_are_only_what_was_typed() -> None:
    seen = {}

    @click.command()
    @click.option("--nodes", type=int, default=1)
    @click.option("-t", "--time", "time")
    @click.option("--python", default="python3")
    @click.option("--no-browser", is_flag=True)
    @click.pass_context
    def cmd(ctx: click.Context, **_: object) -> None:
        seen.update(typed_options(ctx))

    assert CliRunner().invoke(cmd, ["-t", "30", "--no-browser"]).exit_code == 0
    assert seen == {"time": "30"}  # --nodes and --python took click's defaults: not typed; no_browser is no setting
    assert set(seen) <= set(KEYS)


# -- the Python for --local ---------------------------------------------------------------------------


def test_local_picks_a_python_that_has_jupyterlab(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config, '[profiles.here]\nhost = "local"\n')
    monkeypatch.setenv("PATH", str(bin_with_python3(tmp_path / "path", fake_jupyter_python(tmp_path / "p", "2.21.1"))))
    expected = sys.executable if has_jupyterlab(sys.executable) else "python3"  # hpcjup's own first
    for r in (
        resolve({"local": True}, profile=None, env={}, path=config),
        resolve({}, profile="here", env={}, path=config),
    ):
        assert (r.value("python"), r.source("python")) == (expected, "built-in")


def test_local_keeps_a_python_that_was_chosen(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(config, '[defaults]\npython = "/from/defaults"\n[profiles.p]\npython = "/from/profile"\n')
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3 at all: looking for one would fail
    local = {"local": True}
    assert resolve({**local, "python": "/typed"}, profile="p", env={}, path=config).value("python") == "/typed"
    assert resolve(local, profile="p", env={"HPCJUP_PYTHON": "/env"}, path=config).value("python") == "/env"
    assert resolve(local, profile="p", env={}, path=config).value("python") == "/from/profile"
    assert resolve(local, profile=None, env={}, path=config).value("python") == "/from/defaults"


def test_cluster_runs_keep_python3_and_do_not_look_here(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    r = resolve({"host": "juwels"}, profile=None, env={}, path=config)
    assert (r.value("python"), r.source("python")) == ("python3", "built-in")


def test_local_without_jupyterlab_anywhere_is_a_usage_error(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if has_jupyterlab(sys.executable):
        pytest.skip(f"{sys.executable} (hpcjup's own) has JupyterLab: --local always finds one")
    monkeypatch.setenv("PATH", str(bin_with_python3(tmp_path / "path", fake_jupyter_python(tmp_path / "p", None))))
    with pytest.raises(UsageError, match="No JupyterLab for --local") as raised:
        resolve({"local": True}, profile=None, env={}, path=config)
    assert f"{sys.executable} -m pip install 'jupyterlab>=4' 'jupyter_server>=2.20'" in (raised.value.hint or "")


def test_typed_options_pass_local_on() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @click.option("--local", is_flag=True)
    @click.option("--python")
    @click.pass_context
    def cmd(ctx: click.Context, **_: object) -> None:
        seen.clear()
        seen.update(typed_options(ctx))

    assert CliRunner().invoke(cmd, ["--local"]).exit_code == 0 and seen == {"local": True}
    assert CliRunner().invoke(cmd, ["--python", "/p"]).exit_code == 0 and seen == {"python": "/p"}


# -- the commands, for real --------------------------------------------------------------------------


def laptop(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCJUP_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"), NO_COLOR="1")
    return env


def test_profile_commands_end_to_end(tmp_path: Path) -> None:
    env = laptop(tmp_path)
    made = hpcjup(
        [
            "profile",
            "create",
            "jw",
            "--site",
            "juwels",
            "-A",
            "myproj",
            "venv=$PROJECT/env",
            "modules=Stages/2025,GCC,Python",
        ],
        env,
    )
    assert made.returncode == 0, made.stderr
    assert "Wrote [profiles.jw]" in made.stdout
    listed = hpcjup(["profile", "list"], {**env, "HPCJUP_PROFILE": "jw"})
    assert "jw *" in listed.stdout and "juwels" in listed.stdout
    shown = hpcjup(["profile", "show", "jw", "--json"], {**env, "HPCJUP_PARTITION": "devel"})
    settings = json.loads(shown.stdout)["settings"]
    assert settings["partition"] == {"value": "devel", "source": "environment", "location": "$HPCJUP_PARTITION"}
    assert settings["host"]["source"] == "site juwels"
    assert settings["venv"] == {
        "value": "$PROJECT/env",
        "source": "profile jw",
        "location": f"{tmp_path}/cfg/hpcjup/config.toml:5",
    }
    text = hpcjup(["profile", "show", "jw"], env).stdout
    assert "account       myproj" in text and "built-in" in text


def test_profile_errors_exit_2_with_file_and_line(tmp_path: Path) -> None:
    env = laptop(tmp_path)
    write(tmp_path / "cfg" / "hpcjup" / "config.toml", '[profiles.a]\nhost = "x"\nnodes = "many"\n')
    result = hpcjup(["profile", "show", "a", "--json"], env)
    assert result.returncode == ExitCode.USAGE
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith(
        f"{tmp_path}/cfg/hpcjup/config.toml:3: 'nodes' in [profiles.a] must be an integer"
    )
    assert "config.toml:3: 'nodes' in" in result.stderr and "hint:" in result.stderr
    assert hpcjup(["profile", "create", "b", "--site", "nowhere"], env).returncode == ExitCode.USAGE


def test_sites_command_lists_and_shows(tmp_path: Path) -> None:
    env = laptop(tmp_path)
    listed = hpcjup(["sites"], env)
    assert listed.returncode == 0 and "juwels" in listed.stdout and "https://apps.fz-juelich.de/jsc/" in listed.stdout
    data = json.loads(hpcjup(["sites", "--json"], env).stdout)
    assert {"juwels", "jureca"} <= {s["name"] for s in data["sites"]}
    shown = hpcjup(["sites", "juwels"], env)
    assert "account:    required" in shown.stdout and "develbooster" in shown.stdout


def _line_of(path: str, prefix: str) -> int:
    return next(i for i, line in enumerate(Path(path).read_text().splitlines(), 1) if line.startswith(prefix))
