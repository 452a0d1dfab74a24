"""Shell completion of session names from the laptop's cache: instant, never on the network."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, add_completion_class
from click.shell_completion import FishComplete as _FishBase


def complete_session(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Session names this laptop knows of, on the --host given so far (or every host)."""
    from hpcjup.session.store import LocalStore

    store = LocalStore()
    host = ctx.params.get("host")
    hosts = [host] if host else store.hosts()
    names = sorted({name for h in hosts for name in store.names(h)})
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


class FishComplete(_FishBase):
    """Fish completion with one line per item (click 8.5's script splits on newlines it also emits)."""

    source_template = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) COMP_CWORD=(commandline -t) %(prog_name)s);
    for completion in $response;
        set -l metadata (string split -m 1 "," -- $completion);
        if test "$metadata[1]" = "dir";
            __fish_complete_directories $metadata[2];
        else if test "$metadata[1]" = "file";
            __fish_complete_path $metadata[2];
        else if test "$metadata[1]" = "plain";
            echo $metadata[2];
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments "(%(complete_func)s)";
"""

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value.replace("\n", " ")
        return f"{item.type},{value}\t{item.help.splitlines()[0]}" if item.help else f"{item.type},{value}"


def register() -> None:
    """Use our fish completion class (called only when the shell asks for completions)."""
    add_completion_class(FishComplete, "fish")
