"""A POSIX sh command as one line that any login shell hands to `sh` unchanged.

sshd runs every remote command as `LOGIN_SHELL -c COMMAND`, and the login shell may be bash,
zsh, tcsh/csh, fish or another: tcsh refuses a newline inside quotes and expands `!` there, fish
reads `\\\\` and `\\'` inside single quotes as escapes, neither knows `VAR=value cmd` or `$(...)`.
hpcjup's commands are POSIX sh (an argument list joined by shlex), so each goes out wrapped as

    sh -c 'eval "$(printf "FORMAT")"'

where FORMAT is the command with every character that any of these shells (or sh's double
quotes, or printf) might read specially written as a three-digit octal escape, `%` as `%%`.
What is left inside the single quotes is letters, digits, spaces, plain punctuation and
backslashes followed by digits: every shell above passes that through as it is, and the
decoding needs only POSIX `printf` (no base64, which some login nodes lack). Stdin, stdout,
stderr and the exit code are the command's own, and no extra round trip is made.
"""

from __future__ import annotations

import string

# Characters that stay as they are: none of them is special inside single quotes for sh, bash, zsh,
# tcsh/csh or fish, nor inside sh's double quotes, nor in a printf format.
_PLAIN = frozenset(string.ascii_letters + string.digits + " #&()*+,-./:;<=>?@[]^_{|}~")
_TABLE = [chr(b) if chr(b) in _PLAIN else f"\\{b:03o}" for b in range(256)]
_TABLE[ord("%")] = "%%"


def printf_format(command: str) -> str:
    """`command` (UTF-8) as a printf format that prints it back, using only characters every shell leaves alone."""
    return "".join(_TABLE[b] for b in command.encode("utf-8", "surrogateescape"))


def for_login_shell(command: str) -> str:
    """The one-line command to send over SSH so that `sh` runs `command`, whatever the user's login shell.

    printf's output loses trailing newlines in `$(...)`, which changes no shell command.
    """
    return f'sh -c \'eval "$(printf "{printf_format(command)}")"\''
