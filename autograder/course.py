"""Where a course's labs, releases and student-side files live."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from autograder.notebooks import Lab, LabError, load_lab

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE_ROOT = Path(__file__).resolve().parent  # autograder/ is the nbgrader course root


@dataclass(frozen=True)
class Course:
    """An nbgrader course root (``source/<lab>/<lab>.ipynb``) and what students get with it.

    Attributes:
        root: the nbgrader course root (holds ``source/`` and ``nbgrader_config.py``).
        release_dir: where ``release`` writes the student notebooks (``<lab>.ipynb``).
        student_files: files and folders a student has next to the notebook (copied onto the
            kernel's ``PYTHONPATH`` when grading); never the sources or reference outputs.
    """

    root: Path = COURSE_ROOT
    release_dir: Path = REPO_ROOT
    student_files: tuple[Path, ...] = (REPO_ROOT / "helpers",)

    @property
    def config_file(self) -> Path:
        own = self.root / "nbgrader_config.py"
        return own if own.is_file() else COURSE_ROOT / "nbgrader_config.py"

    def labs(self) -> list[str]:
        """Lab names: folders of ``source/`` holding a notebook of the same name."""
        source = self.root / "source"
        if not source.is_dir():
            return []
        return sorted(p.name for p in source.iterdir() if (p / f"{p.name}.ipynb").is_file())

    def source_path(self, lab: str) -> Path:
        return self.root / "source" / lab / f"{lab}.ipynb"

    def release_path(self, lab: str) -> Path:
        return self.release_dir / f"{lab}.ipynb"

    def load(self, lab: str) -> Lab:
        """The lab's parsed source notebook (``LabError`` naming the labs there are)."""
        path = self.source_path(lab)
        if not path.is_file():
            known = ", ".join(self.labs()) or "none"
            raise LabError(f"no lab {lab!r} under {self.root / 'source'} (labs: {known})")
        return _load_cached(path, lab, path.stat().st_mtime_ns)

    def infer_lab(self, grade_ids: set[str], file_stem: str = "") -> str | None:
        """The lab whose cells a notebook's grade_ids match best, else one named like the file."""
        best, best_count = None, 0
        for lab in self.labs():
            try:
                count = len(grade_ids & set(self.load(lab).by_id))
            except LabError:
                continue
            if count > best_count:
                best, best_count = lab, count
        if best:
            return best
        return next((lab for lab in self.labs() if lab == file_stem or lab in file_stem), None)


@lru_cache(maxsize=16)
def _load_cached(path: Path, lab: str, mtime_ns: int) -> Lab:
    return load_lab(path, lab)
