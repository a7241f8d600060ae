"""The toy nbgrader assignment (tests/fixtures/toy) and small helpers the autograder's tests
share: its source, a correct student notebook, and edits of single cells."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import nbformat

from autograder.execute import Limits
from autograder.notebooks import strip_hidden

TOY_ROOT = Path(__file__).parent / "fixtures" / "toy"
TOY_SOURCE = TOY_ROOT / "source" / "toy" / "toy.ipynb"
QUESTIONS = ["toy_double", "toy_square", "toy_q_why"]
# The limits the toy's tests grade under. Memory: above what importing a CUDA build of torch
# maps (3.1 GiB for 2.14.1+cu130, 4.7 GiB for 2.10.0+cu128), which a toy kernel does only when
# the judge's first request arrives.
TOY_LIMITS = Limits(cell_timeout=8, notebook_timeout=60, memory_mb=6144, threads=1)


def source_nb() -> nbformat.NotebookNode:
    return nbformat.read(TOY_SOURCE, as_version=4)


def answered() -> nbformat.NotebookNode:
    """A correct toy notebook as a student has it (solutions, no hidden tests)."""
    notebook = source_nb()
    for cell in notebook.cells:
        cell.source = strip_hidden(cell.source)
    return notebook


def cell_by_id(notebook: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(
        c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    )


def with_solution(notebook: nbformat.NotebookNode, grade_id: str, source: str):
    """A copy of ``notebook`` whose cell ``grade_id`` holds ``source``."""
    notebook = copy.deepcopy(notebook)
    cell_by_id(notebook, grade_id).source = source
    return notebook


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))
