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
#: The same, and Unicode's bidirectional overrides and isolates, which reorder what follows them on screen (text
#: shown for reading, such as a job's log or a node name in a table).
CONTROL_OR_BIDI = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, bidi: bool = False) -> str:
    """`text` with its control characters written as \\xNN (with `bidi`, also the bidirectional overrides and
    isolates, as \\uNNNN), so none of them acts on the terminal; newlines and tabs stay."""
    return (CONTROL_OR_BIDI if bidi else CONTROL).sub(_escaped, text)
