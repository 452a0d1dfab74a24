"""The paramiko backend: one Transport, one authentication, everything multiplexed over it.

Commands are exec channels, files go through one SFTP channel, and port forwards
are `direct-tcpip` channels on the same Transport, so a 2FA code is asked once and
the centre sees a single connection. ProxyJump hops are Transports of their own, each
tunnelled through a direct-tcpip channel of the hop before it, host keys checked at every hop.
A compute node (`hop`) is reached the same way, with the login node as its last jump.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import select
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpcjup.errors import ConnectError, WaitTimeout
from hpcjup.transport.askpass import effective_prompter
from hpcjup.transport.base import FILE_LIMIT, Prompter, RemoteProcess, Stream, Transport, bounded
from hpcjup.transport.destination import Destination, check_node_name, jump_chain, parse_destination
from hpcjup.transport.hostkeys import known_key_types, verify_host_key
from hpcjup.transport.loginshell import for_login_shell
from hpcjup.transport.paramiko_auth import Authenticator, no_prompt

if TYPE_CHECKING:
    import paramiko

    from hpcjup.transport.streamlocal import StreamLocalTransport

log = logging.getLogger("hpcjup.ssh")

# Bigger than paramiko's 2 MiB default so one bulk download is not throttled by window updates.
_WINDOW = 16 * 1024 * 1024
# Large packets and AES-GCM (one pass, no separate HMAC) roughly double paramiko's download rate:
# its per-packet cost in Python, not the cipher, is what limits it. Servers fall back as they must.
_MAX_PACKET = 256 * 1024 - 1024
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class ParamikoTransport(Transport):
    """A paramiko Transport to the login node, through ProxyJump hops if ~/.ssh/config says so."""

    def __init__(
        self,
        dest: Destination,
        prompt: Prompter | None = no_prompt,
        *,
        accept_new: bool = False,
        via: ParamikoTransport | None = None,
    ) -> None:
        self.dest = dest
        self.name = dest.alias
        self._accept_new = accept_new
        self._via = via  # the login node, when this is a compute node reached through it
        # One per login (a compute node takes its login node's): a passphrase is asked once.
        self._auth: Authenticator = via._auth if via else Authenticator(effective_prompter(prompt) or no_prompt)
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()
        self._home: str | None = None
        self._hops: list[paramiko.Transport] = []  # jump hosts, first hop first; closed after the target
        self._t: StreamLocalTransport = self._connect()

    # -- connection and authentication -------------------------------------------------

    def _connect(self) -> StreamLocalTransport:
        """Connect hop by hop: each later host is reached through a direct-tcpip channel of the one before."""
        if self._via is not None:
            return self._handshake(self.dest, self._through(self._via._t, self._via.dest, self.dest))
        chain = [*jump_chain(self.dest), self.dest]
        sock: Any = self._first_socket(chain[0])
        try:
            for hop, nxt in itertools.pairwise(chain):  # pairs of consecutive hosts
                self._hops.append(self._handshake(hop, sock))
                sock = self._through(self._hops[-1], hop, nxt)
            return self._handshake(chain[-1], sock)
        except BaseException:
            for hop_t in reversed(self._hops):
                hop_t.close()
            raise

    @staticmethod
    def _first_socket(dest: Destination) -> Any:
        """A TCP socket to the first host, or its ProxyCommand's pipe."""
        import paramiko

        if dest.proxy_command:
            return paramiko.ProxyCommand(dest.proxy_command)
        try:
            sock = socket.create_connection((dest.hostname, dest.port), timeout=dest.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectError(
                f"Cannot resolve {dest.hostname}: {exc.strerror}", hint="Check the host name (and your VPN)."
            ) from exc
        except OSError as exc:
            raise ConnectError(
                f"Cannot reach {dest.hostname}:{dest.port}: {exc.strerror or exc}",
                hint="Check the host and port, your network or VPN, and whether `ssh` reaches it.",
            ) from exc
        # As OpenSSH does: small packets (keystrokes, a notebook's websocket messages) go out at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @staticmethod
    def _through(t: paramiko.Transport, hop: Destination, nxt: Destination) -> paramiko.Channel:
        """A direct-tcpip channel from jump host `hop` to the next host, used as the next Transport's socket."""
        import paramiko

        try:
            return t.open_channel(
                "direct-tcpip",
                (nxt.hostname, nxt.port),
                ("127.0.0.1", 0),
                window_size=_WINDOW,
                max_packet_size=_MAX_PACKET,
                timeout=nxt.connect_timeout,
            )
        except (paramiko.ChannelException, paramiko.SSHException) as exc:
            raise ConnectError(
                f"The jump host {hop.alias} could not connect to {nxt.hostname}:{nxt.port} ({exc}).",
                hint="Check the ProxyJump and HostName lines in ~/.ssh/config; `ssh -J` should reach it the same way.",
            ) from exc

    def _handshake(self, dest: Destination, sock: Any) -> StreamLocalTransport:
        """Key exchange, host key check and authentication with one host over `sock`."""
        import paramiko

        from hpcjup.transport.streamlocal import StreamLocalTransport

        t = StreamLocalTransport(sock, default_window_size=_WINDOW, default_max_packet_size=_MAX_PACKET)
        try:
            opts = t.get_security_options()
            fast = [c for c in _PREFERRED_CIPHERS if c in opts.ciphers]  # older paramiko lacks GCM
            opts.ciphers = [*fast, *(c for c in opts.ciphers if c not in fast)]
            preferred = known_key_types(dest, opts.key_types)
            if preferred:
                opts.key_types = preferred + [k for k in opts.key_types if k not in preferred]
            t.start_client(timeout=dest.connect_timeout)
            if t.local_cipher.startswith("aes") and t.remote_cipher.startswith("aes"):
                # paramiko rekeys every 512 MiB, and a rekey it starts can deadlock with a channel close
                # (paramiko issue #822), killing the connection. Rekey where OpenSSH does for 128-bit blocks.
                t.packetizer.REKEY_BYTES = t.packetizer.REKEY_PACKETS = 2**36
            verify_host_key(dest, t.get_remote_server_key(), self._accept_new)
            self._auth.authenticate(t, dest)
        except (paramiko.SSHException, EOFError) as exc:
            t.close()
            raise ConnectError(
                f"SSH handshake with {dest.hostname}:{dest.port} failed: {exc or type(exc).__name__}"
            ) from exc
        except BaseException:
            t.close()
            raise
        t.set_keepalive(dest.server_alive_interval)
        return t

    # -- commands -----------------------------------------------------------------------

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        chan = self._t.open_session()
        try:
            _exec(chan, command)
            try:
                if input is not None:
                    chan.sendall(input)
                chan.shutdown_write()
            except OSError:  # the channel closed under us: a refused exec, or a command that ended unread
                if not chan.closed:
                    raise
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"Remote command timed out after {timeout:.0f} s: {command}")
                # The channel's fileno wakes on stdout/stderr data and on close; cap the wait so
                # an exit status arriving alone is seen promptly.
                select.select([chan], [], [], min(remaining, 0.2))
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
            code = chan.recv_exit_status()
            if code == -1 and not chan.event_ready and not out and not err and self._t.is_active():
                raise ConnectError(
                    f"{self.name} refused to run a command (its SSH server declined the exec request).",
                    hint="A restricted account (a menu shell, a ForceCommand) cannot run hpcjup: check `ssh HOST true`.",
                )
            return code, bytes(out), bytes(err)
        finally:
            chan.close()

    def _start(self, command: str) -> RemoteProcess:
        chan = self._t.open_session()
        _exec(chan, command)  # refused, the channel closes: the process reads as ended at once
        return _ChannelProcess(chan)

    # -- files --------------------------------------------------------------------------

    @property
    def sftp(self) -> paramiko.SFTPClient:
        with self._sftp_lock:
            if self._sftp is None:
                import paramiko

                self._sftp = paramiko.SFTPClient.from_transport(self._t)
            return self._sftp

    def home(self) -> str:
        if self._home is None:
            _log_sftp("normalize", ".", self.name)
            self._home = self.sftp.normalize(".")
        return self._home

    def read_file(self, path: str) -> bytes:
        _log_sftp("read_file", path, self.name)
        with self.sftp.open(path, "rb") as fh:
            return bounded(path, fh.read(FILE_LIMIT + 1))

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        _log_sftp("write_file", path, self.name)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        sftp = self.sftp
        # Create with restrictive permissions before any byte is written.
        with sftp.open(tmp, "wb") as fh:
            fh.chmod(mode)
            fh.write(data)
        try:
            sftp.posix_rename(tmp, path)
        except OSError:
            sftp.remove(tmp)
            raise

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        _log_sftp("mkdir", path, self.name)
        sftp = self.sftp
        try:
            sftp.mkdir(path, mode)
        except OSError:
            try:
                if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    raise FileExistsError(path) from None
            except FileNotFoundError:
                pass
            raise
        sftp.chmod(path, mode)  # the server's umask may have filtered the mode

    def remove(self, path: str) -> None:
        _log_sftp("remove", path, self.name)
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass

    # -- forwarding ---------------------------------------------------------------------

    def open_stream(self, host: str, port: int) -> Stream:
        return _channel(
            lambda: self._t.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=15),
            f"The login node could not connect to {host}:{port}",
        )

    def open_unix_stream(self, path: str) -> Stream:
        return _channel(
            lambda: self._t.open_streamlocal(path, timeout=15), f"{self.name} could not connect to the socket {path}"
        )

    def hop(self, node: str) -> Transport:
        own = parse_destination(check_node_name(node))  # the node's Host block: port, timeouts, known_hosts files
        dest = dataclasses.replace(
            own,
            user=self.dest.user,
            identity_files=(*self.dest.identity_files, *own.identity_files),
            identities_only=self.dest.identities_only,
            proxy_jump=None,
            proxy_command=None,
        )
        return ParamikoTransport(dest, self._auth.prompt, accept_new=self._accept_new, via=self)

    @property
    def alive(self) -> bool:
        """Whether the SSH connection is still up."""
        return self._t.is_active()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self._t.close()
        for hop in reversed(self._hops):
            hop.close()


def _exec(chan: paramiko.Channel, command: str) -> None:
    """`Channel.exec_command` without waiting for the server's answer, as OpenSSH does: one round trip less
    per remote command (stdin may follow at once; the server takes the request first). The answer still
    comes: success marks the channel `event_ready`, a refusal closes it (see _exec_raw)."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)  # want a reply
    m.add_string(for_login_shell(command))  # sshd runs it through the user's login shell, whichever that is
    chan.transport._send_user_message(m)


def _channel(open_channel: Callable[[], paramiko.Channel], failure: str) -> paramiko.Channel:
    """A forwarding channel; the server's refusal as a ConnectError that starts with `failure`."""
    import paramiko

    try:
        return open_channel()
    except paramiko.ChannelException as exc:
        raise ConnectError(
            f"{failure} ({exc.text}).", hint="Is the job still running? `hpcjup ls` shows its state."
        ) from exc


def _log_sftp(operation: str, path: str, host: str) -> None:
    """SFTP calls are round trips too: `-v` shows each like a remote command."""
    log.debug("sftp %s %s -> sent on %s", operation, path, host)


class _ChannelProcess:
    """A long-lived remote command on a paramiko channel (its fileno wakes select on data and on close)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def fileno(self) -> int:
        return self.chan.fileno()

    def read_some(self) -> bytes:
        return self.chan.recv(65536)

    def close_input(self) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone already
            self.chan.shutdown_write()  # the remote command sees EOF on stdin and ends

    def close(self) -> None:
        self.close_input()
        self.chan.close()
