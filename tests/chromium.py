"""Headless Chromium for the tests that check a page in a real browser, offline.

The proxy points at a closed port, so a page that reaches for a remote host gets nothing (loopback is not
proxied: a test can run its own server to see whether a page fetches anything at all).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from conftest import require_binary
from PIL import Image


def _flags(profile: Path) -> list[str]:
    chromium = require_binary("chromium", "the page is checked in a real browser")
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
            "--proxy-server=127.0.0.1:9", f"--user-data-dir={profile}", "--virtual-time-budget=3000"]


def dump_dom(page: Path, profile: Path) -> str:
    """The main document's DOM after the page loaded and its scripts ran (frames are not expanded)."""
    return subprocess.run([*_flags(profile), "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1200, 1600)) -> np.ndarray:
    """The page as painted, an RGB array of ``size`` (width, height)."""
    subprocess.run([*_flags(profile), f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def painted(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of the colour ``rgb``."""
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) < tolerance).sum())
