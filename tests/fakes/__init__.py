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

_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


fake_cloud = _load("fake_cloud")
#: The fake Vertex AI JobService (gRPC), ``scripts/fake_vertex.py``.
fake_vertex = _load("fake_vertex")
