"""The program's cache folder, MASKEDKD_CACHE (default ~/.cache/maskedkd): data/ (the synthetic sound set's splits),
teachers/ (embedded teachers trained once) and runs/ (their training runs). Here, at the bottom of the program ring,
so that the data sources and the teachers both read it."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """MASKEDKD_CACHE, read when called (the test suite points it at a temporary folder)."""
    return Path(os.environ.get("MASKEDKD_CACHE", Path.home() / ".cache" / "maskedkd"))
