"""Are the notebooks in the repository committed clean (no outputs, valid nbformat 4)?"""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers.profiles import REPO_ROOT


def tracked_notebooks() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*.ipynb"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return sorted(listed)


def test_the_labs_are_tracked():
    """Are both student notebooks and their sources in git?"""
    notebooks = tracked_notebooks()
    assert "lab1_pruning.ipynb" in notebooks
    assert "autograder/source/lab1_pruning/lab1_pruning.ipynb" in notebooks


@pytest.mark.parametrize("path", tracked_notebooks())
def test_notebook_has_no_outputs(path):
    """Is every code cell free of outputs and execution counts?"""
    notebook = json.loads((REPO_ROOT / path).read_text())
    assert notebook["nbformat"] == 4
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path}: cells {dirty} hold outputs; clear them before committing"
