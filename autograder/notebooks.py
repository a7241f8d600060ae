"""Reading labs and submissions, and restoring the cells a student must not change.

A *lab* is an nbgrader source notebook (``<course>/source/<lab>/<lab>.ipynb``) holding the
solutions and the visible and hidden tests. Its cells with nbgrader metadata fall into kinds:

- ``test``: graded code cell without a solution region (locked; hidden tests inside);
- ``autograded``: graded code cell that is also a solution cell (passes iff it runs);
- ``manual``: graded markdown cell with a solution region (a written answer, graded by a person);
- ``solution``: a student's code cell (not graded itself; the tests call what it defines);
- ``locked``: provided code or prose the student must not change.

``restore`` puts every ``test`` and ``locked`` cell back as the source has it (hidden tests
included), whatever the student did to it, and says what it found changed.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

HIDDEN_BEGIN = "BEGIN HIDDEN TESTS"
HIDDEN_END = "END HIDDEN TESTS"
SOLUTION_BEGIN = "BEGIN SOLUTION"
SOLUTION_END = "END SOLUTION"
# What a written-answer cell holds in the release (nbgrader_config.py: ClearSolutions.text_stub)
TEXT_STUB = "YOUR ANSWER HERE"

PROTECTED_KINDS = ("test", "locked")
AUTOGRADED_KINDS = ("test", "autograded")
# The nbgrader fields that decide how a cell is graded; a change to any of them is tampering.
GRADING_FIELDS = ("grade", "solution", "locked", "grade_id", "points")


class LabError(ValueError):
    """A lab source notebook that cannot be used (missing, malformed nbgrader metadata)."""


class Unreadable(ValueError):
    """A submission that cannot be graded at all; the message says why, in plain words."""


@dataclass(frozen=True)
class SourceCell:
    """One nbgrader cell of a lab's source notebook."""

    grade_id: str
    index: int  # position in the source notebook
    kind: str  # test | autograded | manual | solution | locked
    cell_type: str  # code | markdown | raw
    points: float  # 0 for cells that are not graded
    source: str  # as the instructor wrote it (hidden tests and solutions included)
    release_source: str  # as the student received it (hidden tests removed)
    cell: dict = field(repr=False, compare=False)  # the whole source cell

    @property
    def graded(self) -> bool:
        return self.kind in ("test", "autograded", "manual")


@dataclass(frozen=True)
class Lab:
    """A lab: its name, source notebook and nbgrader cells in notebook order."""

    name: str
    path: Path
    notebook: NotebookNode = field(repr=False, compare=False)
    cells: tuple[SourceCell, ...]

    @property
    def by_id(self) -> dict[str, SourceCell]:
        return {cell.grade_id: cell for cell in self.cells}

    @property
    def questions(self) -> list[SourceCell]:
        """The graded cells (one row each in grades.csv), in notebook order."""
        return [cell for cell in self.cells if cell.graded]

    @property
    def autograded(self) -> list[SourceCell]:
        return [cell for cell in self.cells if cell.kind in AUTOGRADED_KINDS]

    @property
    def max_score(self) -> float:
        return sum(cell.points for cell in self.questions)


def source_text(cell: dict) -> str:
    """A cell's source as one string (nbformat allows a list of lines on disk)."""
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(str(line) for line in source)
    return str(source or "")


def is_blank(text: str) -> bool:
    """Whether a written answer is empty or still the release's placeholder."""
    return text.strip() in ("", TEXT_STUB)


def nbgrader_meta(cell: dict) -> dict | None:
    """The cell's ``metadata.nbgrader`` dict, or None when absent or malformed."""
    metadata = cell.get("metadata")
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) and meta.get("grade_id") else None


def grade_ids(notebook: NotebookNode) -> set[str]:
    """The grade_ids of a notebook's nbgrader cells."""
    return {str(meta["grade_id"]) for meta in map(nbgrader_meta, notebook.cells) if meta}


def cell_kind(cell: dict) -> str | None:
    """The nbgrader kind of a cell (see the module docstring), or None for a plain cell."""
    meta = nbgrader_meta(cell)
    if meta is None:
        return None
    grade, solution = bool(meta.get("grade")), bool(meta.get("solution"))
    if grade and not solution:
        return "test" if cell.get("cell_type") == "code" else "locked"
    if grade and solution:
        return "autograded" if cell.get("cell_type") == "code" else "manual"
    if solution:
        return "solution"
    if meta.get("locked"):
        return "locked"
    return None


def marked_regions(source: str, begin: str, end: str) -> list[list[int]]:
    """The 1-based line numbers of each region from a line holding ``begin`` to the next line
    holding ``end``, delimiters included (an unclosed region runs to the last line)."""
    regions: list[list[int]] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        if not inside and begin in line:
            inside = True
            regions.append([])
        if inside:
            regions[-1].append(number)
            inside = end not in line
    return regions


def hidden_lines(source: str) -> set[int]:
    """1-based line numbers inside a hidden-test region (delimiters included)."""
    return {n for region in marked_regions(source, HIDDEN_BEGIN, HIDDEN_END) for n in region}


def strip_hidden(source: str) -> str:
    """The source without its hidden-test regions, as nbgrader's ClearHiddenTests leaves it."""
    hidden = hidden_lines(source)
    lines = source.split("\n")
    return "\n".join(line for number, line in enumerate(lines, start=1) if number not in hidden)


def normalise_source(source: str) -> str:
    """Source compared for tampering: trailing spaces and blank edges do not count."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def load_lab(path: Path, name: str | None = None) -> Lab:
    """Read a lab's source notebook and classify its nbgrader cells."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"no source notebook at {path}")
    notebook = nbformat.read(path, as_version=4)
    cells, seen = [], set()
    for index, cell in enumerate(notebook.cells):
        kind = cell_kind(cell)
        if kind is None:
            continue
        meta = cell.metadata.nbgrader
        grade_id = str(meta["grade_id"])
        if grade_id in seen:
            raise LabError(f"{path}: grade_id {grade_id!r} is used by two cells")
        seen.add(grade_id)
        points = float(meta.get("points") or 0) if meta.get("grade") else 0.0
        if kind in ("test", "autograded", "manual") and points <= 0:
            raise LabError(f"{path}: graded cell {grade_id!r} has no points")
        text = source_text(cell)
        if hidden_lines(text) and kind != "test":
            raise LabError(f"{path}: cell {grade_id!r} has hidden tests but is not a test cell")
        cells.append(
            SourceCell(
                grade_id=grade_id,
                index=index,
                kind=kind,
                cell_type=cell.cell_type,
                points=points,
                source=text,
                release_source=strip_hidden(text),
                cell=copy.deepcopy(dict(cell)),
            )
        )
    if not any(cell.graded for cell in cells):
        raise LabError(f"{path}: no graded cells (nbgrader metadata with grade=true)")
    return Lab(name=name or path.stem, path=path, notebook=notebook, cells=tuple(cells))


MAX_DEPTH = 100  # JSON nesting a notebook may have (Jupyter's own stay under 20)
TOO_DEEP = f"the file is not a notebook: its JSON is nested more than {MAX_DEPTH} levels deep"


def _nested_at_most(value: object, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest at most ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def read_submission(data: bytes) -> NotebookNode:
    """Parse a submitted file into a notebook, or raise ``Unreadable`` saying why."""
    if not data.strip():
        raise Unreadable("the file is empty")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Unreadable("the file is not a notebook (not text)") from None
    except json.JSONDecodeError as error:
        raise Unreadable(
            f"the file is not a notebook: it is not valid JSON ({error.msg} at line "
            f"{error.lineno}); was it edited by hand or truncated?"
        ) from None
    except RecursionError:
        raise Unreadable(TOO_DEEP) from None
    if not _nested_at_most(raw, MAX_DEPTH):
        raise Unreadable(TOO_DEEP)  # later steps (copies, reports) recurse through it
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise Unreadable("the file is JSON but not a Jupyter notebook")
    if raw.get("nbformat") != 4:
        raise Unreadable(
            f"the notebook is in format {raw.get('nbformat')} (this course uses format 4); "
            "open it in a current Jupyter and save it again"
        )
    cells = raw.get("cells")
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        raise Unreadable("the notebook has no list of cells")
    clean = []
    for cell in cells:
        cell_type = cell.get("cell_type")
        if cell_type not in ("code", "markdown", "raw"):
            raise Unreadable(f"the notebook holds a cell of unknown type {cell_type!r}")
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        new = {"cell_type": cell_type, "metadata": metadata, "source": source_text(cell)}
        if isinstance(cell.get("id"), str):
            new["id"] = cell["id"]
        if cell_type == "code":
            new["outputs"], new["execution_count"] = [], None
        clean.append(new)
    if not any(nbgrader_meta(cell) for cell in clean):
        raise Unreadable(
            "the notebook has no nbgrader metadata: it is not the released lab notebook "
            "(was the work copied into a new notebook?)"
        )
    notebook = nbformat.from_dict(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {},
            "cells": clean,
        }
    )
    return notebook


@dataclass
class Restored:
    """A submission ready to run: cells restored, and what was found changed."""

    notebook: NotebookNode
    index_of: dict[str, int]  # grade_id -> cell index in ``notebook``
    changes: dict[str, list[str]]  # grade_id -> what was changed in that protected cell
    notes: list[str]  # remarks about the submission as a whole


def _short_diff(student: str, release: str) -> str:
    diff = difflib.unified_diff(
        release.splitlines(), student.splitlines(), "released", "submitted", lineterm="", n=1
    )
    lines = list(diff)[2:]
    return "\n".join(lines[:20] + (["..."] if len(lines) > 20 else []))


def _protected_change(student: dict, cell: SourceCell) -> list[str]:
    """How a student's copy of a protected cell differs from what they were given."""
    changes = []
    if student.get("cell_type") != cell.cell_type:
        changes.append(f"its type was changed from {cell.cell_type} to {student.get('cell_type')}")
    text = normalise_source(source_text(student))
    if text not in (normalise_source(cell.release_source), normalise_source(cell.source)):
        changes.append(
            "its content was edited:\n" + _short_diff(source_text(student), cell.release_source)
        )
    meta = nbgrader_meta(student) or {}
    want = cell.cell["metadata"]["nbgrader"]
    for key in GRADING_FIELDS:
        if key in ("points",) and not cell.graded:
            continue
        if meta.get(key) != want.get(key) and not (
            key == "points" and _same_number(meta.get(key), want.get(key))
        ):
            changes.append(
                f"its nbgrader metadata {key!r} was {meta.get(key)!r}, not {want.get(key)!r}"
            )
    return changes


def _same_number(a: object, b: object) -> bool:
    try:
        return float(a) == float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def restore(submission: NotebookNode, lab: Lab) -> Restored:
    """Rebuild a submission for grading: protected cells from the source, answers as written.

    Test and locked cells are replaced by the source's (hidden tests included); deleted ones
    are re-inserted before the next source cell the submission still has. Solution and
    written-answer cells keep the student's content under the source's metadata. Cells that
    claim an unknown or duplicate grade_id lose their nbgrader metadata (they still run).
    """
    by_id = lab.by_id
    cells = [copy.deepcopy(cell) for cell in submission.cells]
    claimed: dict[str, int] = {}  # grade_id -> position in ``cells``
    changes: dict[str, list[str]] = {}
    notes: list[str] = []

    for position, cell in enumerate(cells):
        meta = nbgrader_meta(cell)
        if meta is None:
            cell.get("metadata", {}).pop("nbgrader", None)
            continue
        grade_id = str(meta["grade_id"])
        if grade_id in by_id and grade_id not in claimed:
            claimed[grade_id] = position
            continue
        del cell["metadata"]["nbgrader"]
        if grade_id in by_id:
            changes.setdefault(grade_id, []).append(
                "a second cell claimed this grade_id; the copy was not graded"
            )
        else:
            notes.append(f"a cell with the unknown grade_id {grade_id!r} was not graded")

    # A protected cell whose metadata was stripped: find it by its (released) content.
    for cell in lab.cells:
        if cell.kind not in PROTECTED_KINDS or cell.grade_id in claimed:
            continue
        wanted = {normalise_source(cell.release_source), normalise_source(cell.source)}
        for position, student in enumerate(cells):
            if (
                position not in claimed.values()
                and nbgrader_meta(student) is None
                and student.get("cell_type") == cell.cell_type
                and normalise_source(source_text(student)) in wanted
            ):
                claimed[cell.grade_id] = position
                changes.setdefault(cell.grade_id, []).append(
                    "its nbgrader metadata was removed; the cell was restored"
                )
                break

    for grade_id, position in claimed.items():
        source_cell = by_id[grade_id]
        student = cells[position]
        if source_cell.kind in PROTECTED_KINDS:
            found = _protected_change(student, source_cell)
            if found and not changes.get(grade_id):
                changes.setdefault(grade_id, []).extend(found)
            cells[position] = _fresh_copy(source_cell, cell_id=student.get("id"))
        else:
            student["metadata"]["nbgrader"] = copy.deepcopy(
                source_cell.cell["metadata"]["nbgrader"]
            )

    # Re-insert deleted protected cells before the next source cell still present.
    order = [cell.grade_id for cell in lab.cells]
    missing = [c for c in lab.cells if c.kind in PROTECTED_KINDS and c.grade_id not in claimed]
    slots = list(cells)
    present = set(claimed)
    for cell in missing:
        changes.setdefault(cell.grade_id, []).append(
            "the cell was deleted (or its content and metadata both changed); it was restored"
        )
        later = [gid for gid in order[order.index(cell.grade_id) + 1 :] if gid in present]
        new = _fresh_copy(cell)
        if later:
            slots.insert(next(i for i, c in enumerate(slots) if _grade_id(c) == later[0]), new)
        else:
            slots.append(new)
        present.add(cell.grade_id)

    final = slots
    notebook = copy.deepcopy(submission)
    notebook.cells = [nbformat.from_dict(cell) for cell in final]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    index_of = {}
    for position, cell in enumerate(notebook.cells):
        grade_id = _grade_id(cell)
        if grade_id in by_id and grade_id not in index_of:
            index_of[grade_id] = position
    return Restored(notebook=notebook, index_of=index_of, changes=changes, notes=notes)


def _grade_id(cell: dict) -> str | None:
    meta = nbgrader_meta(cell)
    return str(meta["grade_id"]) if meta else None


def _fresh_copy(cell: SourceCell, cell_id: str | None = None) -> dict:
    new = copy.deepcopy(cell.cell)
    if cell_id:
        new["id"] = cell_id
    if new.get("cell_type") == "code":
        new["outputs"], new["execution_count"] = [], None
    return new


_ID_RE = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


def normalise_notebook(notebook: NotebookNode) -> str:
    """A notebook as deterministic text: no outputs, counts or run metadata; stable ids."""
    notebook = copy.deepcopy(notebook)
    notebook.nbformat, notebook.nbformat_minor = 4, max(5, notebook.get("nbformat_minor", 5))
    seen: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not _ID_RE.match(cell_id) or cell_id in seen:
            grade_id = _grade_id(cell)
            cell_id = re.sub(r"[^a-zA-Z0-9-_]", "-", grade_id)[:64] if grade_id else f"cell-{index}"
            while cell_id in seen:
                cell_id = f"{cell_id[:58]}-{index}"
        cell["id"] = cell_id
        seen.add(cell_id)
    return nbformat.writes(notebook, version=4) + "\n"
