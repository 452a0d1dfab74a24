"""The `hpcjup` command line: a click group whose commands load only when they run.

Each command lives in its own module here and exposes `command`. `main` is the only
place that turns an `HpcjupError` into output and an exit code.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

import click

from hpcjup import __version__
from hpcjup.cli.app import App
from hpcjup.errors import ExitCode, HpcjupError, Interrupted, UsageError

# name -> (module, attribute, one-line help); the help is here so `hpcjup --help` imports no command module.
COMMANDS = {
    "start": ("start", "command", "Submit a job running JupyterLab and open it through a tunnel."),
    "attach": ("attach", "command", "Reopen the tunnel to a running session (from any laptop)."),
    "ls": ("ls", "command", "List the sessions on a host: state, time left, URL, why it ended."),
    "logs": ("logs", "command", "Print a session's job log (-f follows it)."),
    "url": ("tunnels", "url_command", "Print the local URL of an attached session."),
    "open": ("tunnels", "open_command", "Open an attached session in the browser."),
    "disconnect": ("tunnels", "disconnect_command", "Close a session's tunnel; the job keeps running."),
    "profile": ("profile", "command", "Named settings in config.toml: list, show, create."),
    "sites": ("sites", "command", "List the site presets (juwels, jureca, your own)."),
    "doctor": ("doctor", "command", "Check SSH, Slurm, partition, account, environment and Jupyter."),
    "scale": ("scale", "command", "Change a Dask worker group of a running session."),
    "stop": ("stop", "command", "Stop a session: Jupyter shuts down cleanly, the job ends."),
    "prune": ("prune", "command", "Remove ended sessions (directories, logs, cache entries)."),
    "stats": ("stats", "command", "Queue waits, time to URL, how sessions ended, node-hours, per partition."),
    "env": ("env", "command", "Environments from your spec files, built once per host: ls, build, rm, lock."),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(import_module(f"hpcjup.cli.{module}"), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="hpcjup")
@click.option("-v", "--verbose", count=True, help="Show every remote command and its timing (-vv: SSH details).")
@click.option("-q", "--quiet", is_flag=True, help="Print only results.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Jupyter and Dask on an HPC cluster, from your laptop.

    \b
    Try it here first:      hpcjup start --local
    On a Slurm cluster:     hpcjup start --host juwels --partition booster --time 2:00:00
    """
    ctx.obj = App.create(verbose=verbose, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    if "_HPCJUP_COMPLETE" in os.environ:  # the shell asks for completions: a rarely needed import
        from hpcjup.cli.complete import register

        register()
    args = sys.argv[1:] if argv is None else list(argv)  # only to look for --json: click reads argv itself
    try:
        result = cli.main(args=argv, prog_name="hpcjup", standalone_mode=False)
        code = result if isinstance(result, int) else 0  # ctx.exit(n) ends up here without standalone mode
    except HpcjupError as exc:
        App.current().ui.error(exc)
        code = int(exc.exit_code)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:  # bad flags: click's message, exit code 2
        code = int(ExitCode.USAGE) if exc.exit_code == 2 else exc.exit_code
        if _wants_json(args):  # click failed before --json took effect: a script still gets the JSON envelope
            ui = App.current().ui
            ui.json_mode = True
            ui.error(_from_click(exc, args))
        else:
            exc.show()
    except (KeyboardInterrupt, click.exceptions.Abort):
        App.current().ui.error(Interrupted("Interrupted."))
        code = int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly; the traceback with -v
        app = App.current()
        if app.ui.verbose:
            import traceback

            traceback.print_exc()
        app.ui.error(
            HpcjupError(
                f"Unexpected error: {type(exc).__name__}: {exc}",
                hint="Run again with -v and report the output. A submitted job keeps running: `hpcjup ls` shows it.",
            )
        )
        code = int(ExitCode.ERROR)
    sys.exit(code)


def _wants_json(args: list[str]) -> bool:
    """Whether --json is among the options (not after `--`, where everything is an argument)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _from_click(exc: click.ClickException, args: list[str]) -> HpcjupError:
    """click's error as hpcjup's: a usage error (exit 2) with the command's usage line and where to find help."""
    ctx = getattr(exc, "ctx", None)  # click.UsageError mostly knows the command it was parsing
    command = ctx.command_path if ctx is not None else " ".join(["hpcjup", *[a for a in args if a in COMMANDS][:1]])
    usage = ctx.get_usage() if ctx is not None else None
    error_type = UsageError if exc.exit_code == 2 else HpcjupError
    return error_type(exc.format_message(), hint=f"`{command} --help` lists the options.", details=usage)
