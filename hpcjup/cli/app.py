"""The application object every command receives: output, local state, connections."""

from __future__ import annotations

import functools
import getpass
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hpcjup.cli.settingopts import setting_option
from hpcjup.errors import AuthError, UsageError
from hpcjup.ui import UI

if TYPE_CHECKING:
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.session.store import LocalStore
    from hpcjup.transport.base import Transport

F = TypeVar("F", bound=Callable[..., Any])
LOCAL = "local"


@dataclass(frozen=True)
class Reach:
    """How a command reaches its host, resolved once (by `host_options`) and passed down: the SSH backend,
    whether an unknown host key may be added, and the batch system a new session uses ("auto": detect)."""

    ssh: str = "auto"
    accept_new: bool = False
    scheduler: str = "auto"

    @classmethod
    def resolve(
        cls, ssh: str | None, accept_new: bool, scheduler: str | None, profile: str | None, has_profile: bool
    ) -> Reach:
        """The flags, else the settings (the profile, $HPCJUP_SSH / $HPCJUP_SCHEDULER, [defaults], a site), else
        auto. A command without --profile still runs when the settings cannot be read (a broken config.toml,
        a bad $HPCJUP_SSH: `stop` must always work): it says so and goes on with the command line's."""
        from hpcjup.config.profiles import resolve

        typed = {key: value for key, value in (("ssh", ssh), ("scheduler", scheduler)) if value is not None}
        try:
            settings = resolve(typed, profile=profile)
            return cls(settings.value("ssh") or "auto", accept_new, settings.value("scheduler") or "auto")
        except UsageError as exc:
            if not has_profile:  # start and doctor resolve the whole profile next, and refuse it there (with --json)
                App.current().ui.warn(f"{exc.message} Going on with the command line's settings only.")
        return cls(ssh or "auto", accept_new, scheduler or "auto")


class App:
    """Shared state of one hpcjup invocation."""

    _current: App | None = None

    def __init__(self, ui: UI) -> None:
        self.ui = ui
        self._store: LocalStore | None = None

    @classmethod
    def create(cls, *, verbose: int = 0, quiet: bool = False) -> App:
        app = cls(UI(quiet=quiet, verbose=verbose))
        if verbose:
            logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)
            logging.getLogger("hpcjup").setLevel(logging.DEBUG)
            if verbose > 1:
                logging.getLogger("paramiko").setLevel(logging.DEBUG)
        cls._current = app
        return app

    @classmethod
    def current(cls) -> App:
        """The running invocation's app (a default one before the group callback ran)."""
        return cls._current or cls(UI())

    @property
    def store(self) -> LocalStore:
        if self._store is None:
            from hpcjup.session.store import LocalStore

            self._store = LocalStore()
        return self._store

    def resolve_host(self, host: str | None, local: bool, session: str | None = None) -> str:
        """Which host a command talks to: --local, --host, $HPCJUP_HOST, the one host whose cached sessions
        include `session`, or the only host with sessions; always the destination as the user wrote it."""
        if local:
            if host:
                raise UsageError("--local and --host exclude each other.")
            return LOCAL
        host = host or os.environ.get("HPCJUP_HOST")
        if host:
            return host
        known = set(self._cached_hosts())
        if session:
            having = sorted(set(self._cached_hosts(session)))
            if len(having) == 1:
                return having[0]
            if len(having) > 1:
                raise UsageError(
                    f"Session {session!r} exists on several hosts: {', '.join(having)}.", hint="Pass --host."
                )
        if len(known) == 1:
            return next(iter(known))
        raise UsageError(
            "Which cluster? No --host given.",
            hint="Pass --host (an alias from ~/.ssh/config, or user@host), set HPCJUP_HOST, or use --local.",
        )

    def _cached_hosts(self, session: str | None = None) -> list[str]:
        """The hosts (as the user wrote them) of this laptop's cached sessions, or of those called `session`."""
        store = self.store
        found = []
        for directory in store.hosts():
            for name in store.names(directory) if session is None else [session]:
                entry = store.load(directory, name)
                if entry and entry.host is not None:
                    found.append(entry.host)
        return found

    def connect(self, host: str, reach: Reach) -> Transport:
        """The command's one connection to `host`."""
        from hpcjup.transport import connect

        return connect(host, prompt=terminal_prompt, backend=reach.ssh, accept_new=reach.accept_new)

    def connect_with_status(self, host: str, reach: Reach) -> Transport:
        """connect(), saying so first (a plain line, not a spinner: a passphrase or 2FA prompt may follow)."""
        self.ui.info(f"Connecting to {host}…")
        return self.connect(host, reach)

    def choose_scheduler(self, transport: Transport, host: str, reach: Reach, *, remembered: bool = True) -> Scheduler:
        """The adapter a new session submits with: --local's, the one chosen (--scheduler, profile, site),
        or, for "auto", the one the host has (asked in the same remote command that learns its home).
        With `remembered`, what the last start learned of the host stands in for asking (`start`'s
        upload checks it before it submits: see `relearn`); `doctor` always asks."""
        from hpcjup.schedulers import AUTO, get_scheduler
        from hpcjup.session import hostfacts

        if host == LOCAL:
            return get_scheduler("local")
        choice = reach.scheduler
        facts = hostfacts.load(self.store, transport.destination or host) if remembered else None
        name = facts and (facts.scheduler if choice == AUTO else choice)
        if facts is not None and name:
            transport._home = facts.home
            return get_scheduler(name)
        return self.relearn(transport, host, reach)

    def relearn(self, transport: Transport, host: str, reach: Reach) -> Scheduler:
        """Ask the host for its home (and, for "auto", its batch system) and remember them for the next start
        (a scheduler chosen by name is not remembered as the host's: "auto" must still find the host's own)."""
        from hpcjup.schedulers import AUTO, detect, get_scheduler
        from hpcjup.session import hostfacts

        key = transport.destination or host
        choice = reach.scheduler
        transport._home = None
        detected = detect(transport) if choice == AUTO else None
        before = hostfacts.load(self.store, key)
        hostfacts.save(
            self.store, key, hostfacts.HostFacts(transport.home(), detected or (before.scheduler if before else None))
        )
        return get_scheduler(detected or choice)


def terminal_prompt(question: str, echo: bool) -> str:
    """Ask on the terminal (a passphrase or a 2FA code); refuse when there is none."""
    if not sys.stdin.isatty():
        raise AuthError(
            f"The server asks {question.strip()!r}, but there is no terminal to answer it.",
            hint="Run hpcjup in a terminal, or load your key into ssh-agent first.",
        )
    return input(question) if echo else getpass.getpass(question)


def check_local_port(port: int | None) -> None:
    """Fail now, before anything is submitted, if the requested local port is taken."""
    if port is not None:
        from hpcjup.tunnel import bind_loopback

        bind_loopback(port).close()


def json_option(func: F) -> F:
    """Add --json to a command: its result becomes one JSON object on stdout."""

    @click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object.")
    @functools.wraps(func)
    def wrapper(*args: Any, json_mode: bool, **kwargs: Any) -> Any:
        App.current().ui.json_mode = json_mode
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def host_options(func: F) -> F:
    """Add --host and --local (where the session lives), --ssh, --accept-new-host-key and --scheduler (how to get
    there, and what runs the job): the command gets them resolved as `reach` (a Reach)."""

    @setting_option("host", "--host", metavar="DEST")
    @click.option("--local", is_flag=True, help="This machine, without SSH or a scheduler.")
    @click.option(
        "--ssh",
        "ssh_backend",
        type=click.Choice(["auto", "openssh", "paramiko"]),
        help="SSH backend (default: auto, or $HPCJUP_SSH).",
    )
    @click.option(
        "--accept-new-host-key",
        is_flag=True,
        help="Add an unknown host key to ~/.ssh/known_hosts (a changed one is still refused).",
    )
    @setting_option("scheduler", "--scheduler", metavar="NAME")
    @functools.wraps(func)
    def wrapper(
        *args: Any, ssh_backend: str | None, accept_new_host_key: bool, scheduler: str | None, **kwargs: Any
    ) -> Any:
        profile = kwargs.get("profile")  # start and doctor take --profile: its ssh and scheduler apply too
        reach = Reach.resolve(ssh_backend, accept_new_host_key, scheduler, profile, "profile" in kwargs)
        return func(*args, reach=reach, **kwargs)

    return wrapper  # type: ignore[return-value]
