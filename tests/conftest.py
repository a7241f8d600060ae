"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def lab_data(tmp_path, monkeypatch) -> Path:
    """An empty LAB_DATA of the test's own (never the repository's data/ folder), and the CPU.

    Modules that must never touch data/ use it for every test:
    ``pytestmark = pytest.mark.usefixtures("lab_data")``."""
    root = tmp_path / "data"
    monkeypatch.setenv("LAB_DATA", str(root))
    monkeypatch.setenv("LAB_DEVICE", "cpu")
    for name in ("LAB_CHECKPOINT_URL", "LAB_CHECKPOINT_SHA256"):  # a course's own copy
        monkeypatch.delenv(name, raising=False)
    return root
