"""The browser is started with a file:// page that redirects to the URL: the token never reaches a command line."""

from __future__ import annotations

import http.server
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlparse

import pytest

TOKEN = "3f1c0ffee0123456789abcdef0123456789abcdef012345"


def open_with_browser(tmp_path: Path, url: str, browser: str) -> tuple[str, list[str]]:
    """Run open_url(url) in a fresh interpreter whose $BROWSER is `browser`; (its output, the argv the browser got)."""
    record = tmp_path / "argv"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" > {record}\n{browser}\n')
    script.chmod(0o700)
    env = {**os.environ, "BROWSER": str(script), "XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    env.pop("DISPLAY", None)
    code = f"from hpcjup.ui.browser import open_url; print(open_url({url!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), record.read_text().splitlines()


def test_the_browsers_argv_holds_no_token(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:8888/lab?token={TOKEN}&x=<y>"
    opened, argv = open_with_browser(tmp_path, url, "true")
    assert opened == "True"
    assert not any(TOKEN in arg for arg in argv)  # before: `BROWSER URL`, with the token, visible in `ps`
    page = Path(unquote(urlparse(argv[1]).path))
    assert argv[1].startswith("file://") and page.is_file()
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert stat.S_IMODE(page.parent.stat().st_mode) == 0o700
    content = page.read_text()
    escaped = url.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<meta http-equiv="refresh" content="0;url={escaped}">' in content


def test_old_pages_are_swept(tmp_path: Path) -> None:
    from hpcjup.ui.browser import redirect_file

    directory = tmp_path / "open"
    directory.mkdir(mode=0o700)
    old = redirect_file("http://127.0.0.1:1/?token=old", directory)
    os.utime(old, (0, 0))
    new = redirect_file("http://127.0.0.1:1/?token=new", directory)
    assert not old.exists() and new.exists()


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><title>lab</title></html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.paths = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.browser
def test_chromium_follows_the_redirect_to_the_token_url(tmp_path: Path, server: http.server.HTTPServer) -> None:
    chromium = shutil.which("chromium")
    if not chromium:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium not installed (tests/cluster/install.sh installs it)")
    url = f"http://127.0.0.1:{server.server_address[1]}/lab?token={TOKEN}"
    profile = tmp_path / "profile"
    browser = (
        f"{chromium} --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking "
        f"--disable-component-update --disable-sync --user-data-dir={profile} --virtual-time-budget=5000 "
        '--dump-dom "$1" > /dev/null 2>&1'
    )
    opened, argv = open_with_browser(tmp_path, url, browser)
    assert opened == "True" and not any(TOKEN in arg for arg in argv)
    assert f"/lab?token={TOKEN}" in _Recorder.paths  # the page took the real browser to the token URL
