"""Generate the student notebooks with ``nbgrader generate_assignment``, and check them.

nbgrader runs on a temporary copy of the course root (its ``nbgrader_config.py`` and the lab's
source folder) without a gradebook, so no ``gradebook.db`` or ``release/`` folder is left in
the repository. The
result is normalised (no outputs or execution counts, stable cell ids, sorted keys) so that
two runs give the same bytes.

The check grades the solution notebook and the fresh release with the grading engine under
``LAB_PROFILE=smoke``: every autograded cell must pass on the solution and fail on the
release, or the release is refused.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.course import Course
from autograder.execute import Limits
from autograder.notebooks import normalise_notebook


class ReleaseError(RuntimeError):
    """nbgrader failed, or the release check found cells that do not behave."""


def generate(course: Course, lab: str) -> str:
    """The student notebook for ``lab``, as deterministic text.

    Runs nbgrader's GenerateAssignment converter in this process (``--no-db``: no gradebook
    is needed to release) with the course's ``nbgrader_config.py``, on a temporary copy of
    the course root.
    """
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log
    from traitlets.config.loader import PyFileConfigLoader

    source = course.source_path(lab)
    if not source.is_file():
        raise ReleaseError(f"no source notebook {source}")
    with tempfile.TemporaryDirectory(prefix="autograder-release-") as scratch:
        root = Path(scratch) / "course"
        shutil.copytree(
            source.parent,
            root / "source" / lab,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
        shutil.copy2(course.config_file, root / "nbgrader_config.py")
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.db_url = f"sqlite:///{Path(scratch) / 'gradebook.db'}"
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id = lab
        converter = GenerateAssignment(coursedir=coursedir, config=config)
        converter.force = True
        outcome = capture_log(converter)
        released = root / "release" / lab / f"{lab}.ipynb"
        if not outcome.get("success") or not released.is_file():
            raise ReleaseError(
                f"nbgrader generate_assignment failed for {lab}:\n"
                f"{outcome.get('log', '')}{outcome.get('error') or ''}"
            )
        return normalise_notebook(nbformat.read(released, as_version=4))


@dataclass
class CheckResult:
    """What the release check found: cells that should pass but fail, and the reverse."""

    lab: str
    solution_failures: list[str] = field(default_factory=list)  # "grade_id: message"
    release_passes: list[str] = field(default_factory=list)  # grade_ids passing when blank
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.solution_failures and not self.release_passes

    def describe(self) -> str:
        lines = []
        if self.solution_failures:
            lines.append(f"{self.lab}: the solution notebook fails autograded cells:")
            lines += [f"  - {line}" for line in self.solution_failures]
        if self.release_passes:
            lines.append(f"{self.lab}: the blank release passes autograded cells (tests too weak):")
            lines += [f"  - {line}" for line in self.release_passes]
        return "\n".join(lines) or f"{self.lab}: release check passed"


def check(course: Course, lab: str, release_text: str, limits: Limits = Limits()) -> CheckResult:
    """Grade the solution and the blank release under smoke (two kernels, in parallel)."""
    from autograder.grade import Settings, UsageError, grade_batch

    settings = Settings(course=course, lab=lab, limits=limits)
    with tempfile.TemporaryDirectory(prefix="autograder-check-") as scratch:
        folder = Path(scratch) / "submissions"
        folder.mkdir()
        shutil.copy2(course.source_path(lab), folder / "solution.ipynb")
        (folder / "release.ipynb").write_text(release_text, encoding="utf-8")
        try:
            batch = grade_batch(
                [folder],
                Path(scratch) / "out",
                settings,
                jobs=2,
                progress=False,
                log=lambda *_: None,
            )
        except UsageError as error:  # the set-up cells fail, no kernel starts, ...
            raise ReleaseError(f"{lab}: the release cannot be checked: {error}") from None
    by_student = {r["student"]: r for r in batch.results}
    result = CheckResult(lab)
    autograded = {q.grade_id for q in course.load(lab).autograded}
    for row in by_student["solution"]["rows"]:
        if row["question"] in autograded and row["score"] < row["max_score"]:
            result.solution_failures.append(f"{row['question']}: {row['message']}")
    for row in by_student["release"]["rows"]:
        if row["question"] in autograded and row["score"] > 0:
            result.release_passes.append(row["question"])
    result.seconds = max(r.get("seconds", 0.0) for r in by_student.values())
    return result


def committed_matches(course: Course, lab: str, fresh: str | None = None) -> tuple[bool, str]:
    """Whether the committed student notebook equals a fresh release; returns (ok, fresh).

    ``fresh`` is a release generated beforehand (default: generate one now).
    """
    fresh = generate(course, lab) if fresh is None else fresh
    path = course.release_path(lab)
    return path.is_file() and path.read_text(encoding="utf-8") == fresh, fresh
