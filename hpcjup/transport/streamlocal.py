"""paramiko's Transport, able to open `direct-streamlocal@openssh.com` channels (to a remote Unix socket).

paramiko's open_channel writes the type-specific fields only of the channel types it knows; for
this one it writes none. The socket path and the two reserved fields of OpenSSH's PROTOCOL
(section 2.4) are added to the CHANNEL_OPEN message on its way out, in the thread that opens
the channel. Imported only when paramiko connects (the import costs ~100 ms).
"""

from __future__ import annotations

import threading

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

STREAMLOCAL = "direct-streamlocal@openssh.com"


class StreamLocalTransport(paramiko.Transport):
    """A paramiko Transport with `open_streamlocal`."""

    _pending = threading.local()  # the socket path a CHANNEL_OPEN of this thread still lacks

    def open_streamlocal(self, path: str, timeout: float | None = None) -> paramiko.Channel:
        """A channel to the Unix socket `path` on the server."""
        self._pending.path = path
        try:
            return self.open_channel(STREAMLOCAL, timeout=timeout)
        finally:
            self._pending.path = None

    def _send_user_message(self, data: paramiko.Message) -> None:
        path = getattr(self._pending, "path", None)
        if path is not None and data.asbytes()[:1] == cMSG_CHANNEL_OPEN:
            self._pending.path = None
            data.add_string(path)
            data.add_string("")  # reserved
            data.add_int(0)  # reserved
        super()._send_user_message(data)
