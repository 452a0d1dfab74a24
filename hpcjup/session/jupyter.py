"""Talking to the session's Jupyter through the tunnel: its URL and its health check."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from hpcjup.errors import HpcjupError, WaitTimeout
from hpcjup.session.record import Connection

# No proxy: with http_proxy set, urllib would send even 127.0.0.1 requests, token included, to the proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def lab_url(local_port: int, conn: Connection, *, token: bool = True) -> str:
    """The JupyterLab URL on the laptop's end of the tunnel."""
    url = f"http://127.0.0.1:{local_port}{conn.base_url.rstrip('/')}/lab"
    return f"{url}?token={conn.token}" if token else url


def api_status(local_port: int, conn: Connection, deadline: float = 15.0) -> dict[str, Any]:
    """GET /api/status through the tunnel with the token; retried briefly until it answers 200."""
    url = f"http://127.0.0.1:{local_port}{conn.base_url.rstrip('/')}/api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {conn.token}"})
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            with _DIRECT.open(request, timeout=max(1.0, end - time.monotonic())) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # Jupyter answered, but not with 200: retrying will not help
            raise HpcjupError(
                f"Jupyter answered {exc.code} {exc.reason} to the session's token.",
                hint="Stop the session and start a new one.",
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
    raise WaitTimeout(
        f"Jupyter did not answer through the tunnel within {deadline:.0f} s ({last}).",
        hint="The job may have ended; `hpcjup ls` shows its state.",
    )
