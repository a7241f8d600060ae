"""Golden round trip of each lab through the autograder.

Does the committed student notebook equal a fresh release? Does the solution earn full marks
and the untouched release zero, when graded the way students are graded? Does each common
mistake (tests/<lab>_mistakes.py, e.g. lab1_mistakes.py) lose points on exactly the cells it
should?

The mistakes are graded in one batch (--jobs 2) with the provided, non-graded cells other than
the set-up skipped (the demos, the sensitivity scan, the fine-tuning runs): GRADING.md
requires test cells to be self-contained, and the unmodified solution, graded the same way in
the same batch, shows that they are. Each mistake is graded twice: alone in its notebook (what
it costs by itself) and packed with mistakes of other functions (each notebook at most one
mistake per function and per failing cell: several mistakes must not hide or add to each
other). Packing alone can hide a mistake's extra loss behind another's expected one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ as a package

from autograder.course import Course
from autograder.execute import Limits
from autograder.grade import Settings, grade_batch
from autograder.release import committed_matches, generate
from benchmarks.grading import load_mistakes, mistakes_path, with_mistake

COURSE = Course()
# lab -> the file listing its common mistakes
LABS = {lab: mistakes_path(lab) for lab in ("lab1_pruning", "lab3_quant_prune")}
LIMITS = Limits(cell_timeout=300, notebook_timeout=900, threads=1)

pytestmark = pytest.mark.timeout(1200)


def lab_param(lab: str):
    missing = [p for p in (COURSE.source_path(lab), LABS[lab]) if not p.is_file()]
    reason = f"{lab} is not there yet (missing {', '.join(map(str, missing))})"
    return pytest.param(lab, id=lab, marks=pytest.mark.skipif(bool(missing), reason=reason))


ALL_LABS = [lab_param(lab) for lab in LABS]


def cells_changed(mistake: dict) -> set[str]:
    return {change["grade_id"] for change in (mistake, *mistake.get("more", ()))}


def rows_of(results: list[dict], student: str) -> dict[str, dict]:
    (result,) = [r for r in results if r["student"] == student]
    return {row["question"]: row for row in result["rows"]}


@pytest.mark.parametrize("lab", ALL_LABS)
def test_committed_release_equals_a_fresh_one(lab):
    """Does `make release` reproduce the committed student notebook byte for byte?"""
    path = COURSE.release_path(lab)
    assert path.is_file(), f"{path.name} is missing: run `make release`"
    same, fresh = committed_matches(COURSE, lab)
    assert same, f"{path.name} differs from a fresh release: run `make release`"
    assert "BEGIN HIDDEN TESTS" not in fresh and "BEGIN SOLUTION" not in fresh


@pytest.mark.parametrize("lab", ALL_LABS)
def test_solution_earns_full_marks_and_the_release_zero(lab, tmp_path):
    """Graded like a student's work: the solution gets every point, the blank release none."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "solution.ipynb").write_bytes(COURSE.source_path(lab).read_bytes())
    (folder / "blank.ipynb").write_text(generate(COURSE, lab))
    settings = Settings(course=COURSE, lab=lab, limits=LIMITS)
    batch = grade_batch([folder], tmp_path / "out", settings, jobs=2, progress=False)
    autograded = {q.grade_id for q in COURSE.load(lab).autograded}
    solution, blank = rows_of(batch.results, "solution"), rows_of(batch.results, "blank")
    failing = {
        q: r["message"]
        for q, r in solution.items()
        if q in autograded and (r["score"] != r["max_score"] or r["status"] != "ok")
    }
    assert not failing, f"the solution loses points: {failing}"
    passing = [q for q, r in blank.items() if q in autograded and r["score"] > 0]
    assert not passing, f"the blank release earns points on {passing}"
    assert {r["status"] for r in blank.values()} <= {"ok", "manual"}  # graded, not crashed
    assert all(r["status"] == "manual" for q, r in blank.items() if q not in autograded)


def group_mistakes(items: list[dict]) -> list[list[dict]]:
    """Mistakes packed into as few notebooks as possible: in each, no two mistakes share a
    solution cell or a failing test cell, so each notebook should lose exactly the union."""
    groups: list[list[dict]] = []
    for mistake in items:
        for group in groups:
            if all(
                not cells_changed(m) & cells_changed(mistake)
                and not set(m["fails"]) & set(mistake["fails"])
                for m in group
            ):
                group.append(mistake)
                break
        else:
            groups.append([mistake])
    return groups


def grade_mistakes(lab: str, tmp_path: Path, groups: list[list[dict]]) -> dict[str, dict]:
    """Grade one notebook per group (plus the plain solution) in one batch, --jobs 2, with
    only the set-up among the provided cells run; returns what went wrong, by notebook."""
    source = COURSE.source_path(lab)
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "solution.ipynb").write_bytes(source.read_bytes())
    names = {}
    for number, group in enumerate(groups):
        notebook = nbformat.read(source, as_version=4)
        for mistake in group:
            notebook = with_mistake(notebook, mistake)
        name = group[0]["name"] if len(group) == 1 else f"group{number}"
        names[name] = group
        nbformat.write(notebook, folder / f"{name}.ipynb")
    spec = COURSE.load(lab)
    provided = [c for c in spec.cells if c.kind == "locked" and c.cell_type == "code"]
    set_up = {c.grade_id for c in provided if "setup" in c.grade_id}  # what tests may rely on
    skip = frozenset(c.grade_id for c in provided if c.grade_id not in set_up)
    settings = Settings(course=COURSE, lab=lab, limits=LIMITS, skip=skip)
    batch = grade_batch([folder], tmp_path / "out", settings, jobs=2, progress=False)
    autograded = [q.grade_id for q in spec.autograded]
    solution = rows_of(batch.results, "solution")
    losing = {
        q: solution[q]["message"]
        for q in autograded
        if solution[q]["score"] < solution[q]["max_score"]
    }
    assert not losing, (
        f"with only {sorted(set_up)} of the provided cells run, the solution loses points: a "
        f"test cell relies on another provided cell: {losing}"
    )
    wrong = {}
    for name, group in names.items():
        expected = set().union(*(set(m["fails"]) for m in group))
        rows = rows_of(batch.results, name)
        lost = {q for q in autograded if rows[q]["score"] < rows[q]["max_score"]}
        partial = {q for q in lost if rows[q]["score"] > 0}
        crashed = {q for q in autograded if rows[q]["status"] in ("error", "timeout")}
        unsaid = {
            q: rows[q]["message"][:300]
            for m in group
            for q, text in m.get("says", {}).items()
            if text not in rows[q]["message"]
        }
        if lost != expected or partial or crashed or unsaid:
            wrong[name] = {
                "mistakes": [m["name"] for m in group],
                "expected": sorted(expected),
                "lost": sorted(lost),
                "crashed": sorted(crashed),
                "messages": {q: rows[q]["message"][:200] for q in lost ^ expected},
                "unsaid": unsaid,
            }
    return wrong


@pytest.mark.parametrize("lab", ALL_LABS)
def test_mistakes_lose_points_on_exactly_their_cells(lab, tmp_path):
    """Do the mistakes, several per notebook (one per function), lose exactly their cells?"""
    wrong = grade_mistakes(lab, tmp_path, group_mistakes(load_mistakes(lab)))
    assert not wrong, wrong


@pytest.mark.parametrize("lab", ALL_LABS)
def test_each_mistake_alone_loses_points_on_exactly_its_cells(lab, tmp_path):
    """One notebook per mistake: does each lose points on exactly its `fails` cells?"""
    wrong = grade_mistakes(lab, tmp_path, [[m] for m in load_mistakes(lab)])
    assert not wrong, wrong
