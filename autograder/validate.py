"""What a student runs before submitting: run the notebook as it is and say what passes.

The notebook runs the way grading runs it (a fresh kernel in a temporary folder, smoke profile,
the same limits) but as submitted: only the visible checks exist in a student's copy, so a
pass here is necessary, not sufficient. Cells the student changed but must not are listed:
grading restores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autograder.course import Course
from autograder.execute import Limits
from autograder.grade import (
    GRADING_ENV,
    failure_message,
    runs_before,
    workspace,
    written_answers,
)
from autograder.notebooks import (
    TEXT_STUB,
    Unreadable,
    grade_ids,
    is_blank,
    nbgrader_meta,
    read_submission,
    restore,
)
from autograder.tables import number


@dataclass
class Validation:
    """The outcome of ``validate``, as lines to print and an overall verdict."""

    lab: str | None
    lines: list[str] = field(default_factory=list)
    passed: bool = False


def validate(
    path: Path,
    course: Course,
    lab: str | None = None,
    limits: Limits = Limits(),
    profile="smoke",
    progress: bool = False,
) -> Validation:
    """Run ``path`` as submitted and describe each autograded cell's result in plain words
    (``progress``: a bar over the cells on stderr while it runs)."""
    from autograder.execute import cell_progress, execute, kernel_env

    path = Path(path)
    data = path.read_bytes()
    try:
        notebook = read_submission(data)
    except Unreadable as why:
        stop = "" if str(why).endswith(("?", ".", "!")) else "."
        return Validation(None, [f"{path.name} cannot be graded: {why}{stop}"])
    lab = lab or course.infer_lab(grade_ids(notebook), path.stem)
    if lab is None:
        labs = ", ".join(course.checkable_labs()) or "none"
        return Validation(None, [f"{path.name}: which lab is this? Pass --lab (labs: {labs})."])
    spec = course.spec(lab)
    result = Validation(lab, [f"Checking {path.name} as {lab} (profile {profile})..."])
    changed = restore(notebook, spec).changes
    with (
        workspace(course, f"{lab}.ipynb", data) as (cwd, extra),
        cell_progress(notebook, f"checking {path.name}", progress) as advance,
    ):
        env = kernel_env({**extra, **GRADING_ENV, "LAB_PROFILE": profile}, threads=limits.threads)
        execution = execute(
            notebook,
            cwd=cwd,
            env=env,
            limits=limits,
            on_cell=advance,
            kernel_log=cwd.parent / "kernel.log",
        )
    positions = {}
    for index, cell in enumerate(execution.notebook.cells):
        meta = nbgrader_meta(cell)
        if meta and str(meta["grade_id"]) not in positions:
            positions[str(meta["grade_id"])] = index
    autograded = sorted(
        positions[q.grade_id]
        for q in spec.questions
        if q.kind != "manual" and q.grade_id in positions
    )
    answers = written_answers(spec, notebook)  # as grading keeps them (None: no cell)
    passed_points = total_points = 0.0
    passed_cells = total_cells = 0
    for question in spec.questions:
        points = f"{number(question.points)} point{'s' if question.points != 1 else ''}"
        if question.kind == "manual":
            blank = is_blank(answers.get(question.grade_id) or "")
            result.lines.append(
                f"  WRITTEN  {question.grade_id} ({points}): graded by a person"
                + (f" - not answered yet (still {TEXT_STUB!r} or empty)" if blank else "")
            )
            continue
        total_cells += 1
        total_points += question.points
        index = positions.get(question.grade_id)
        run = execution.runs.get(index) if index is not None else None
        if index is None:
            verdict = "MISSING", "the cell is not in your notebook (grading puts it back)"
        elif run is None or run.status == "not_run":
            verdict = "NOT RUN", execution.stopped or "the cell was not run"
        elif run.passed:
            verdict = "PASS", ""
            passed_cells += 1
            passed_points += question.points
        elif run.status in ("timeout", "dead"):
            verdict = "FAIL", run.evalue
        else:
            before = runs_before(execution, autograded, index)
            why = failure_message(execution.notebook.cells[index], run, "autograded", before)
            verdict = "FAIL", why.removeprefix("failed: ")
        word, why = verdict
        line = f"  {word:<8} {question.grade_id} ({points})"
        result.lines.append(f"{line}: {why}" if why else line)
    for grade_id, texts in changed.items():
        result.lines.append(
            f"  NOTE     cell {grade_id} differs from the original ({texts[0].splitlines()[0]}); "
            "grading restores the original"
        )
    result.lines.append(
        f"Visible checks: {passed_cells} of {total_cells} autograded cells pass "
        f"({number(passed_points)} of {number(total_points)} points). Hidden tests run only "
        "when your work is graded, so passing here does not guarantee the points."
    )
    result.passed = passed_cells == total_cells
    return result
