"""Test doubles for the clouds, shared with ``make fake-cloud``.

The fake AWS cloud is the package ``scripts/fake_cloud`` (users run it with ``make fake-cloud``) and the fake
Vertex AI is ``scripts/fake_vertex.py``; this package puts ``scripts/`` on ``sys.path`` so tests import
exactly what users run:

    from fakes import fake_cloud
    handle = fake_cloud.start_fake_cloud()
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

import fake_cloud  # noqa: E402
import fake_vertex  # noqa: E402  (the fake Vertex AI JobService, gRPC)

__all__ = ["fake_cloud", "fake_vertex"]
