"""Text from elsewhere (a server, a job, the cluster) made safe to show on a terminal.

A terminal acts on control characters: ESC starts sequences that move the cursor, retitle the
window, rewrite what was shown, or (in some terminals) answer back; CR overwrites a line. Text the
user did not write (an SSH server's keyboard-interactive prompt, a job's message) reaches the
terminal only through `visible`, which writes each control character as \\xNN instead.
"""

from __future__ import annotations

import re

#: C0 controls but newline and tab, DEL and the C1 controls (U+0080-U+009F; 0x9B is a one-byte CSI).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """`text` with its control characters written as \\xNN, so none of them acts on the terminal."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
