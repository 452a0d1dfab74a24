"""The OpenSSH backend: the system `ssh` with a ControlMaster socket, so all of ~/.ssh/config applies.

One master connection per laptop HOME and user@host:port (and route) authenticates once; every
command is a mux client (`ssh -S SOCK HOST -- CMD`) on it, and ControlPersist keeps it for the
next hpcjup command (`start -d` then `ls` authenticates once). Port forwards speak the mux
protocol (OpenSSH's PROTOCOL.mux) directly: a stdio-forward request hands the master the two ends
of our socketpairs, so forwarded bytes go from the master's C code straight into the tunnel, with
no ssh process per connection. This process holds one idle mux connection (the "lease") while it
uses the master: it keeps ControlPersist from expiring under a long-lived tunnel holder and tells
`alive` at once when the master is gone. The ssh command lines themselves are in sshmaster.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcjup.errors import ConnectError, HpcjupError, WaitTimeout
from hpcjup.transport.base import (
    FILE_LIMIT,
    PipeProcess,
    Prompter,
    RemoteProcess,
    Stream,
    Transport,
    bounded,
    one_line,
)
from hpcjup.transport.destination import (
    check_node_name,
    control_dir,
    locked,
    split_destination,
    wrapper_config,
)
from hpcjup.transport.hostkeys import ssh_error
from hpcjup.transport.loginshell import for_login_shell
from hpcjup.transport.mux import Mux, MuxRefused, MuxStream
from hpcjup.transport.sshmaster import Master, MuxUnavailable, resolve_options, terminate

log = logging.getLogger("hpcjup.ssh")

_DOWNLOAD_BUFFER = 4 * 1024 * 1024  # measured: 0.8x of `ssh -L` with the default socketpair buffers, 1.0x with this
_LOST = (
    "control socket connect",
    "mux_client",
    "kex_exchange_identification",
    "connection closed by unknown",
    "proxycommand",
)


class ConnectionLost(ConnectError, EOFError):
    """The master connection went away (an EOFError too, as a dead paramiko Transport raises)."""


class OpenSSHTransport(Transport):
    """The system ssh, one ControlMaster connection per host, reused across hpcjup commands."""

    def __init__(
        self,
        destination: str,
        prompt: Prompter | None = None,
        *,
        accept_new: bool = False,
        persist: bool = True,
        ssh: str | None = None,
        via: OpenSSHTransport | None = None,
    ) -> None:
        found = ssh or shutil.which("ssh")
        if not found:
            raise MuxUnavailable("No `ssh` program found on PATH.", hint="Install OpenSSH, or use --ssh paramiko.")
        self._ssh = found
        self._prompt, self._accept_new = prompt, accept_new  # for hops to compute nodes
        user, host, port = split_destination(destination)
        self.name = host
        self._target = [*(["-l", user] if user else []), *(["-p", str(port)] if port else []), host]
        if via is not None:  # a compute node: through the login node's master, as its user, with its keys
            self._target = [*via.hop_options(), *self._target]
        self.persist = persist
        directory = control_dir()
        if directory is None:
            raise MuxUnavailable(
                "No private directory for ssh control sockets ($XDG_RUNTIME_DIR or the temporary directory)."
            )
        self._dir = directory
        self._config = wrapper_config(self._dir, accept_new)
        self._unix_forwards: dict[str, Path] = {}
        self._forward_lock = threading.Lock()
        opts = resolve_options(self._ssh, self._config, self._target, self.name)
        self.identity_files = opts.identity_files  # every IdentityFile ssh uses for this host, ~ expanded
        self.user, self.hostname, self.port = (
            opts.values.get("user", ""),
            opts.values.get("hostname", host),
            int(opts.values.get("port", "22")),
        )
        jump = opts.values.get("proxyjump", "none")
        self.proxy_jump = jump if jump != "none" else None
        command = opts.values.get("proxycommand")
        route = f"{Path.home()}\0{self.user}@{self.hostname}:{self.port}\0{self.proxy_jump}\0{command}"
        if via is not None:  # a hop master is this process's own: another's closing it must not cut our forwards
            route += f"\0{os.getpid()}"
        self.control_path = self._dir / hashlib.sha256(route.encode()).hexdigest()[:16]
        self._master = Master(self._ssh, self._config, self.control_path, tuple(self._target), self.name)
        self.started_master = False
        self._home: str | None = None
        self._lease_lock = threading.Lock()
        with locked(self._dir / f"{self.control_path.name}.lock"):
            self._lease: Mux | None = self._reuse()
            if self._lease is None:
                failed = self._master.start(opts, prompt)
                if failed is not None:
                    raise self._failure(failed)
                self.started_master = True
                try:
                    self._lease = Mux(self.control_path)
                except OSError as exc:
                    raise MuxUnavailable(
                        f"ssh connected to {host} but its control socket does not answer: {exc}"
                    ) from exc

    # -- the master connection ------------------------------------------------------------

    def _reuse(self) -> Mux | None:
        """A lease on a live master for this route, or None (a stale socket is removed)."""
        if not self.control_path.exists():
            return None
        try:
            mux = Mux(self.control_path, timeout=5)
            if mux.alive():
                log.debug("reusing the ssh master at %s", self.control_path)
                return mux
            mux.sock.close()
        except OSError as exc:
            log.debug("stale control socket %s: %s", self.control_path, exc)
        self.control_path.unlink(missing_ok=True)
        return None

    def _failure(self, text: str) -> HpcjupError:
        """The hpcjup error for what a failed master printed."""
        if self.proxy_jump and "UNKNOWN port 65535" in text:
            text = self._master.probe() or text  # ssh sends a ControlPersist master's jump-host errors to /dev/null
        accept = f"ssh {f'-J {self.proxy_jump} ' if self.proxy_jump else ''}-p {self.port} {self.user}@{self.hostname}"
        error = ssh_error(
            text, self.user, f"{self.hostname}:{self.port}", self.name, accept, lambda: self._master.probe() or ""
        )
        return error or MuxUnavailable(f"ssh cannot create its control socket: {text.strip()[-300:]}")

    # -- commands ---------------------------------------------------------------------------

    def _client(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        """Run one command as a mux client; (exit code, stdout, stderr) as bytes."""
        argv = [*self._master.client(), "-T", self.name, "--", for_login_shell(command)]
        try:
            proc = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                # Its own session: the terminal's Ctrl-C reaches hpcjup, which decides (e.g. lets a
                # submission finish, then cancels the job), instead of killing the command mid-way.
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(f"Remote command timed out after {timeout:.0f} s: {command}") from exc
        if proc.returncode == 255 and any(s in proc.stderr.decode(errors="replace").lower() for s in _LOST):
            raise ConnectionLost(
                f"The SSH connection to {self.name} is gone.", hint="Run the command again to reconnect."
            )
        return proc.returncode, proc.stdout, proc.stderr

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        return self._client(command, input, timeout)

    def _start(self, command: str) -> RemoteProcess:
        argv = [*self._master.client(), "-T", self.name, "--", for_login_shell(command)]
        stdio = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
        return PipeProcess(subprocess.Popen(argv, **stdio, start_new_session=True))  # type: ignore[call-overload]

    def _script(self, script: str, path: str, *args: str, input: bytes | None = None, timeout: float = 120.0) -> bytes:
        """Run a one-line sh script on `path` (C-locale messages); its stdout, or the OSError a local call would raise."""
        command = shlex.join(["sh", "-c", f"export LC_ALL=C; {script}", "sh", path, *args])
        rc, out, err = self._client(command, input, timeout)
        log.debug("%s -> %d on %s", one_line(command), rc, self.name)
        if rc == 0:
            return out
        msg = err.decode(errors="replace")
        if rc == 66 or "No such file" in msg:
            raise FileNotFoundError(2, "No such file or directory", path)
        if rc == 17 or "File exists" in msg:
            raise FileExistsError(17, "File exists", path)
        if rc == 67 or "Is a directory" in msg:
            raise IsADirectoryError(21, "Is a directory", path)
        if "Permission denied" in msg:
            raise PermissionError(13, "Permission denied", path)
        raise OSError(5, msg.strip() or f"remote command failed with exit code {rc}", path)

    # -- files ------------------------------------------------------------------------------

    def home(self) -> str:
        if self._home is None:
            self._home = self._script("cd && pwd -P", "~").decode().strip()
        return self._home

    def read_file(self, path: str) -> bytes:
        script = '[ -e "$1" ] || exit 66; [ -d "$1" ] && exit 67; exec head -c "$2" -- "$1"'
        return bounded(path, self._script(script, path, str(FILE_LIMIT + 1), timeout=600))

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        # Created under umask 077 (private before any byte lands), then chmod, then an atomic rename.
        script = 'umask 077; t="$1.tmp-$2"; cat > "$t" && chmod "$3" "$t" && mv -f -- "$t" "$1" || { rm -f -- "$t"; exit 1; }'
        self._script(script, path, uuid.uuid4().hex[:8], f"{mode:o}", input=data, timeout=600)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        self._script('[ -e "$1" ] && exit 17; exec mkdir -m "$2" -- "$1"', path, f"{mode:o}")

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        self._script('umask "$2" && mkdir -p -- "$1"', path, f"{0o777 & ~mode:03o}")

    def remove(self, path: str) -> None:
        self._script('rm -f -- "$1"', path)

    # -- forwarding and the connection's life ---------------------------------------------------

    def open_stream(self, host: str, port: int) -> Stream:
        rx, rx_far = socket.socketpair()
        tx, tx_far = socket.socketpair()
        for end in (rx, rx_far):  # downloads: a deep buffer lets the master write ahead of the tunnel's pump
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _DOWNLOAD_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DOWNLOAD_BUFFER)
        try:
            control = self._stdio_forward(host, port, tx_far.fileno(), rx_far.fileno())
        except BaseException:
            rx.close()
            tx.close()
            raise
        finally:
            rx_far.close()  # the master holds its own copies now
            tx_far.close()
        return MuxStream(control, rx, tx)

    def forward_socket(self, client: socket.socket, host: str, port: int) -> socket.socket:
        # The master copies the socket's bytes itself, in C: as fast as `ssh -L`.
        return self._stdio_forward(host, port, client.fileno(), client.fileno())

    def open_unix_stream(self, path: str) -> Stream:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(self._unix_forward(path)))
        except OSError as exc:
            sock.close()
            raise ConnectionLost(
                f"The SSH connection to {self.name} is gone ({exc}).", hint="hpcjup reconnects; try again."
            ) from exc
        return sock

    def _unix_forward(self, path: str) -> Path:
        """A local Unix socket (0600, in our 0700 directory) that the master forwards to `path` on the server."""
        with self._forward_lock:  # browsers open connections in parallel: ask the master once
            local = self._unix_forwards.get(path)
            if local is None:
                local = self._dir / f"{self.control_path.name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}.sock"
                try:
                    with self._mux() as mux:
                        mux.forward_unix(
                            local, path
                        )  # the hop master binds with StreamLocalBindUnlink (an old file goes)
                except MuxRefused as exc:
                    raise ConnectError(
                        f"ssh could not forward a local socket to {path} on {self.name} ({exc})."
                    ) from exc
                self._unix_forwards[path] = local
            return local

    def hop_options(self) -> list[str]:
        """ssh options that reach another host through this master, as this user with these keys."""
        proxy = shlex.join([*self._master.client(), "-W", "%h:%p", self.name])
        keys = [arg for key in self.identity_files for arg in ("-o", f"IdentityFile={key}")]
        return ["-o", f"ProxyCommand={proxy}", "-o", "StreamLocalBindUnlink=yes", *keys, "-l", self.user]

    def hop(self, node: str) -> Transport:
        check_node_name(node)  # a plain name: it lands in a ProxyCommand that a shell runs
        return OpenSSHTransport(node, self._prompt, accept_new=self._accept_new, persist=False, ssh=self._ssh, via=self)

    def _stdio_forward(self, host: str, port: int, read_fd: int, write_fd: int) -> socket.socket:
        """A mux stdio-forward to host:port whose data the master reads from/writes to the given descriptors."""
        with self._mux(timeout=20, keep=True) as mux:
            try:
                mux.stdio_forward(host, port, read_fd, write_fd)
            except MuxRefused as exc:
                mux.sock.close()
                raise ConnectError(
                    f"The login node could not connect to {host}:{port} ({exc}).",
                    hint="Is the job still running? `hpcjup ls` shows its state.",
                ) from exc
        return mux.sock

    @contextmanager
    def _mux(self, timeout: float = 10.0, keep: bool = False) -> Iterator[Mux]:
        """A new control connection to the master (closed afterwards unless `keep`); ConnectionLost if it is gone."""
        try:
            mux = Mux(self.control_path, timeout=timeout)
        except OSError as exc:
            raise ConnectionLost(
                f"The SSH connection to {self.name} is gone ({exc}).", hint="hpcjup reconnects; try again."
            ) from exc
        try:
            yield mux
        except (OSError, struct.error) as exc:
            mux.sock.close()
            raise ConnectionLost(
                f"The SSH connection to {self.name} is gone ({exc}).", hint="hpcjup reconnects; try again."
            ) from exc
        except BaseException:
            mux.sock.close()
            raise
        if not keep:
            mux.sock.close()

    @property
    def alive(self) -> bool:
        """Whether the master still answers on our lease connection."""
        with self._lease_lock:
            if self._lease is None:
                return False
            try:
                return self._lease.alive()
            except (OSError, struct.error):
                return False

    def terminate(self) -> None:
        """Ask the master this transport uses to exit now, whoever started it (ends every command and forward on it)."""
        with self._lease_lock:
            terminate(self._lease, self.control_path)

    def close(self) -> None:
        """Let go of the master: it lives on for ControlPersist, unless we started it with persist=False."""
        with self._lease_lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            if self.started_master and not self.persist:
                terminate(lease)  # on our own lease: never a newer master that someone else started
            lease.sock.close()
