"""Headless Chromium opens the URL `hpcjup start` prints and shows the JupyterLab launcher."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import have_chromium

pytestmark = [pytest.mark.cluster, pytest.mark.browser, pytest.mark.transport]
ARTIFACTS = Path(os.environ.get("HPCJUP_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))


def test_jupyterlab_launcher_in_chromium(lab: dict[str, Any]) -> None:
    if not have_chromium():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromedriver are required in CI")
        pytest.skip("chromium/chromedriver not installed (tests/cluster/install.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="hpcjup-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(lab["url"])
            WebDriverWait(driver, 60).until(
                expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Launcher"))
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "jupyterlab-launcher.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            assert "JupyterLab" in driver.title
        finally:
            driver.quit()
