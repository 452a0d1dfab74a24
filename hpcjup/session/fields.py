"""Checks for every field read from a session's JSON documents: they come from the cluster and are
never trusted blindly (a hand-edited, truncated or hostile file must not crash a command, send a
token elsewhere, or reach a command line).

Each getter returns the value with its type checked, or raises DamagedDocument saying which field
of which file is wrong. Unknown keys are ignored (a newer hpcjup may add some).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from hpcjup.config.schema import PYTHON_WORD
from hpcjup.errors import DamagedDocument

T = TypeVar("T")
MAX_TEXT = 4096  # a message or path longer than this is not something hpcjup wrote
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
ADDRESS = re.compile(r"[A-Za-z0-9.:%-]{1,253}")  # IPv4, IPv6 (with a zone), or a host name
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
WORD = re.compile(r"[a-z][a-z0-9-]{0,63}")
#: The cluster-side Python (session.json's `python`): a worker-group job script runs it as a word of a shell
#: line, so nothing a shell reads (no space, quote, `;`, `$`...), no leading `-`; `~/` only in front.
PYTHON = PYTHON_WORD  # the `python` setting is checked against the same pattern (config.schema), so start never
# writes a session.json that later reads as damaged
#: The Dask scheduler's address (connection.json's `dask.scheduler`): tls:// or tcp://, a host name or an IP
#: address (IPv6 in brackets), a port. It reaches worker jobs' command lines and the user's notebooks.
_DASK_ADDRESS = re.compile(
    r"(?:tls|tcp)://(?:\[[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9_.-]{1,32})?\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):([0-9]{1,5})"
)


def parse_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON document that must be one object."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedDocument(what, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DamagedDocument(what, "is not a JSON object")
    return data


class Reader:
    """Typed access to one document's fields, naming the document in every complaint."""

    def __init__(self, data: dict[str, Any], what: str) -> None:
        self.data, self.what = data, what

    def _get(self, key: str, kind: type[T] | tuple[type, ...], required: bool, default: Any) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise DamagedDocument(self.what, f"has no {key!r}")
            return default
        value = self.data[key]
        # bool is an int in Python; a JSON true is never a count or a port here.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise DamagedDocument(self.what, f"has a {type(value).__name__} for {key!r}")
        return value

    def text(
        self, key: str, *, required: bool = False, default: str | None = None, pattern: re.Pattern[str] | None = None
    ) -> Any:
        """A string without control characters, at most MAX_TEXT long, matching `pattern` if given."""
        value = self._get(key, str, required, default)
        if value is None or value is default:
            return value
        if len(value) > MAX_TEXT or (pattern is None and _CONTROL.search(value)):
            raise DamagedDocument(self.what, f"has an unusable {key!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise DamagedDocument(self.what, f"has an invalid {key!r}: {value[:80]!r}")
        return value

    def message(self, key: str) -> str | None:
        """Free text from the job (shown to the user): control characters other than newline removed."""
        value = self._get(key, str, False, None)
        return None if value is None else re.sub(r"[\x00-\x09\x0b-\x1f\x7f]", "", value)[:MAX_TEXT]

    def integer(
        self, key: str, *, required: bool = False, default: int | None = None, low: int = 0, high: int = 2**31
    ) -> Any:
        """An int (not a bool) between `low` and `high`."""
        value = self._get(key, int, required, default)
        if value is not None and value is not default and not low <= value <= high:
            raise DamagedDocument(self.what, f"has {key!r} out of range: {value}")
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        """A JSON object, or None."""
        return self._get(key, dict, False, None)

    def checked(self, key: str, check: Callable[[Any], T]) -> T:
        """A value passed through `check`, whose ValueError becomes a DamagedDocument."""
        try:
            return check(self.data.get(key))
        except ValueError as exc:
            raise DamagedDocument(self.what, f"has an invalid {key!r}: {exc}") from None


def base_url(value: Any) -> str:
    """Jupyter's base URL: a path that starts with '/' (else `@otherhost/` would send the token away)."""
    if value is None:
        return "/"
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or len(value) > 512:
        raise ValueError(f"{str(value)[:80]!r} is not a path starting with '/'")
    if _CONTROL.search(value) or any(c in value for c in " ?#\\\"'<>`"):
        raise ValueError(f"{value[:80]!r} has characters a URL path may not have")
    return value


def dask_address(value: Any) -> str | None:
    """The Dask scheduler's address as the launcher writes it (`tls://HOST:PORT`), or None when there is none."""
    if value is None or value == "":
        return None
    match = _DASK_ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(1)) <= 65535:
        raise ValueError(f"{str(value)[:80]!r} is not a Dask address such as tls://node1:8786")
    return value
