"""Where edgenas keeps what it can rebuild: one cache root for data, supernets, artifacts, locks and keys."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from platformdirs import user_cache_dir


def cache_root() -> Path:
    """$EDGENAS_CACHE_DIR, else the user cache directory (XDG_CACHE_HOME respected).

    Falls back to the temp directory when that cannot be created (a read-only home).
    """
    base = Path(os.environ.get("EDGENAS_CACHE_DIR") or user_cache_dir("edgenas"))
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        return Path(tempfile.gettempdir()) / "edgenas"
