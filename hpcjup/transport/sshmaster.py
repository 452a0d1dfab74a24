"""The system ssh's command lines for one route: `ssh -G`, the ControlMaster login, mux clients, the probe.

OpenSSHTransport (transport/openssh.py) decides when to start a master and what a failure means;
this module only knows how to run ssh for it.
"""

from __future__ import annotations

import logging
import os
import shlex
import struct
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from hpcjup.errors import ConnectError, UsageError
from hpcjup.transport.askpass import AskpassBridge, askpass_program, ssh_askpass_env, without_askpass
from hpcjup.transport.base import Prompter
from hpcjup.transport.destination import home_overridden
from hpcjup.transport.mux import Mux

log = logging.getLogger("hpcjup.ssh")

PERSIST_SECONDS = 600  # ControlPersist: how long an unused master waits for the next hpcjup command


class MuxUnavailable(ConnectError):
    """ControlMaster cannot work here (no usable ssh or socket directory); the paramiko backend can."""


@dataclass
class SshOptions:
    """What `ssh -G` says ssh will use for a destination."""

    values: dict[str, str] = field(default_factory=dict)  # lower-case option -> its first value
    identity_files: list[str] = field(default_factory=list)  # every IdentityFile, ~ expanded
    # The IdentityFiles to pass explicitly: ssh takes ~ from the password database, hpcjup honours $HOME.
    explicit_identities: list[str] = field(default_factory=list)


def resolve_options(ssh: str, config: Path, target: list[str], name: str) -> SshOptions:
    """`ssh -G`: the options ssh will use for this destination (first value of each)."""
    proc = subprocess.run(
        [ssh, "-G", "-F", str(config), *target], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if "illegal option" in err or "unknown option" in err:
            raise MuxUnavailable(f"{ssh} is too old for hpcjup (it lacks -G): {err}")
        raise UsageError(
            f"ssh cannot use its configuration for {name}: {err.splitlines()[-1] if err else 'no output'}",
            hint=f"Run `ssh -G {name}` to see the problem in ~/.ssh/config.",
        )
    opts = SshOptions()
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        opts.values.setdefault(key.lower(), value.strip())
        if key.lower() == "identityfile":
            opts.identity_files.append(str(Path.home() / value[2:]) if value.startswith("~/") else value)
            if value.startswith("~/") and home_overridden():
                opts.explicit_identities.append(opts.identity_files[-1])
    return opts


@dataclass(frozen=True)
class Master:
    """How to run ssh for one route: the program, hpcjup's wrapper config, the control socket, the destination."""

    ssh: str
    config: Path
    control_path: Path
    target: tuple[str, ...]  # the destination's argv: [-l user] [-p port] [hop options] host
    name: str

    def client(self) -> list[str]:
        """The start of an ssh command line that only ever uses this master.

        -F none: the master already applied the configuration. ProxyCommand=false: if the master
        is gone, fail at once instead of silently opening (and authenticating) a second connection.
        """
        return [
            self.ssh,
            "-F",
            "none",
            "-S",
            str(self.control_path),
            "-o",
            "ControlMaster=no",
            "-o",
            "ProxyCommand=false",
            "-o",
            "BatchMode=yes",
        ]

    def start(self, opts: SshOptions, prompt: Prompter | None) -> str | None:
        """Authenticate once: `ssh -N -f` returns when the master is logged in and listening; what it printed if not."""
        argv = [
            self.ssh,
            "-F",
            str(self.config),
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPath={self.control_path}",
            "-o",
            f"ControlPersist={PERSIST_SECONDS}",
        ]
        if opts.values.get("serveraliveinterval", "0") == "0":
            argv += ["-o", "ServerAliveInterval=30"]  # notice a dead network like the paramiko backend's keepalive
        argv += [arg for key in opts.explicit_identities for arg in ("-o", f"IdentityFile={key}")]
        argv += ["-N", "-f", *self.target]
        env = dict(os.environ)
        program = askpass_program()
        directory = self.control_path.parent
        bridge = AskpassBridge(directory, prompt) if prompt is not None and not program else None
        if program:
            env.update(ssh_askpass_env(program))
        log_path = directory / f"{self.control_path.name}.log"
        log.debug("starting the ssh master: %s", shlex.join(argv))
        with (
            open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as err,
            bridge or nullcontext(),
        ):
            env.update(bridge.env() if bridge else {})
            try:  # stdout/stderr must not be the caller's pipes: the daemonized master keeps them open for minutes;
                # umask 077: a known_hosts that accept-new creates is private, like everything else of ours.
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                    timeout=600,
                    umask=0o077,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise ConnectError(f"ssh to {self.name} did not finish logging in within {exc.timeout:.0f} s.") from exc
        if rc != 0 and bridge is not None and bridge.error is not None:
            raise bridge.error  # e.g. "no terminal to answer": clearer than ssh's "Permission denied"
        if rc == 0:
            return None
        text = log_path.read_text(errors="replace")
        log_path.unlink(missing_ok=True)
        return text

    def probe(self) -> str | None:
        """What a verbose, non-interactive ssh without ControlPersist says (host keys offered, a jump host's errors)."""
        argv = [
            self.ssh,
            "-v",
            "-F",
            str(self.config),
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlPath=none",
            *self.target,
            "true",
        ]
        try:  # a new session: no terminal, so no hop can prompt for anything
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=20,
                env=without_askpass(dict(os.environ)),
                start_new_session=True,
            ).stderr
        except (OSError, subprocess.TimeoutExpired):
            return None


def terminate(lease: Mux | None, path: Path | None = None) -> None:
    """Send MUX_C_TERMINATE on `lease`, or on a new connection to `path`."""
    try:
        (lease or Mux(path or Path("/nonexistent"), timeout=5)).terminate()
    except (OSError, struct.error):  # gone already, or it exits before its answer arrives
        pass
