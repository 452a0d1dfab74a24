"""Command-line options made from the settings' schema: one text per setting, typed values reach the resolver as such."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from hpcjup.cli import doctor, profile, start
from hpcjup.cli.profile import typed_options
from hpcjup.cli.settingopts import setting_option
from hpcjup.config.schema import KEYS


@pytest.mark.parametrize("command", [start.command, doctor.command, profile.create_command], ids=lambda c: c.name)
def test_every_setting_option_says_what_the_schema_says(command: click.Command) -> None:
    settings = [p for p in command.params if isinstance(p, click.Option) and p.name in KEYS]
    assert len(settings) >= (20 if command is start.command else 4)
    for option in settings:
        said = KEYS[str(option.name)].help
        assert (option.help or "").startswith(said[:1].upper() + said[1:] + "."), option.name
        assert option.default in (None, ()), f"{option.name}: the resolver gives defaults, not click"


def test_typed_values_reach_the_resolver_with_the_schemas_types() -> None:
    seen: dict[str, Any] = {}

    @click.command()
    @setting_option("nodes", "-N", "--nodes")
    @setting_option("preemptible", "--preemptible/--not-preemptible")
    @setting_option("kernels", "--kernel")
    @setting_option("env_mode", "--env-mode")
    @setting_option("local_port", "--local-port")
    @click.pass_context
    def probe(ctx: click.Context, **_: Any) -> None:
        seen.update(typed_options(ctx))

    runner = CliRunner()
    assert runner.invoke(probe, ["-N", "2", "--preemptible", "--kernel", "a", "--kernel", "b"]).exit_code == 0
    assert seen == {"nodes": 2, "preemptible": True, "kernels": ("a", "b")}
    seen.clear()
    assert runner.invoke(probe, []).exit_code == 0
    assert seen == {}, "what was not typed is left to the profile, the site and the schema's default"
    refused = runner.invoke(probe, ["--env-mode", "fast"])
    assert refused.exit_code == 2 and "'fast' is not one of 'auto', 'image', 'unpack', 'direct'" in refused.output
    assert (
        runner.invoke(probe, ["-N", "0"]).exit_code == 2
        and runner.invoke(probe, ["--local-port", "70000"]).exit_code == 2
    )
