"""``python scripts/fake_cloud [--port N] [--state-dir D] [--vertex-port N]``: serve the fake cloud."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a folder (`python scripts/fake_cloud`): import the package itself, from scripts/.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from fake_cloud.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
