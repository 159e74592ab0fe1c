"""A real headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright, for the page tests.

The browser is started here and Playwright connects to it over the DevTools protocol: its process
group is known by PID and killed on close, and nothing is downloaded (`playwright install` is never
needed). `scripts/install-system-deps.sh` installs Chromium.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.support.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class Chromium:
    """Headless Chromium on a loopback DevTools port, with its profile and settings under `scratch`."""

    def __init__(self, scratch: Path, timeout: float = 60) -> None:
        port = free_port()
        self.playwright: Playwright | None = None
        self.log = scratch / "chromium.log"
        env = {**os.environ, "XDG_CONFIG_HOME": str(scratch / "config")}
        profile = scratch / "profile"
        command = [str(CHROMIUM), *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while not self._answers(endpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start:\n{self.log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        self.playwright = sync_playwright().start()
        self.browser: Browser = self.playwright.chromium.connect_over_cdp(endpoint)

    @staticmethod
    def _answers(endpoint: str) -> bool:
        try:
            return httpx.get(f"{endpoint}/json/version", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        """Disconnect Playwright, then SIGTERM the browser's process group by its PID (SIGKILL if it
        lingers)."""
        if self.playwright is not None:
            self.playwright.stop()
            self.playwright = None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the browser and its renderer processes
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
