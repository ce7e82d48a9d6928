"""Test doubles for the clouds, shared with ``make fake-cloud``.

The fake AWS cloud lives in ``scripts/fake_cloud.py`` (users run it as a script); this package loads
that one file as the module ``fake_cloud`` so tests use exactly what users run:

    from fakes import fake_cloud
    handle = fake_cloud.start_fake_cloud()
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fake_cloud.py"


def _load_fake_cloud():
    if "fake_cloud" in sys.modules:
        return sys.modules["fake_cloud"]
    spec = importlib.util.spec_from_file_location("fake_cloud", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_cloud"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


fake_cloud = _load_fake_cloud()
