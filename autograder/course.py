"""Where a course's labs, releases and student-side files live."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from autograder.notebooks import Lab, LabError, load_lab

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE_ROOT = Path(__file__).resolve().parent  # autograder/ is the nbgrader course root
RELEASED = "released"  # <course root>/released/<lab>.ipynb: only in a student handout


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

    def released_path(self, lab: str) -> Path:
        """A student handout's unedited copy of the released notebook (see ``handout``)."""
        return self.root / RELEASED / f"{lab}.ipynb"

    def load(self, lab: str) -> Lab:
        """The lab's parsed source notebook (``LabError`` naming the labs there are)."""
        path = self.source_path(lab)
        if not path.is_file():
            known = ", ".join(self.labs()) or "none"
            why = f"no lab {lab!r} under {self.root / 'source'} (labs: {known})"
            if not self.labs() and self.released_labs():
                why += (
                    "; this is a student handout: without the solutions and hidden tests it "
                    "can check a notebook (validate) but not grade, run or release one"
                )
            raise LabError(why)
        return _load_cached(path, lab, path.stat().st_mtime_ns)

    def released_labs(self) -> list[str]:
        """Labs with a released copy under ``RELEASED`` (in a student handout)."""
        return sorted(p.stem for p in (self.root / RELEASED).glob("*.ipynb"))

    def checkable_labs(self) -> list[str]:
        """Labs a notebook can be checked against: the sources, else the released copies."""
        return self.labs() or self.released_labs()

    def spec(self, lab: str) -> Lab:
        """What ``validate`` checks against: the source, else (in a student handout, which has
        no sources) the released notebook, whose cells, points and visible checks are the same
        as the source's without the solutions and hidden tests."""
        if self.labs() or not self.released_path(lab).is_file():
            return self.load(lab)
        path = self.released_path(lab)
        return _load_cached(path, lab, path.stat().st_mtime_ns)

    def student_tree(self, prefix: str = "") -> dict[str, bytes]:
        """The files of every student file and folder (``file_tree``), named ``prefix + name``;
        ``FileNotFoundError`` naming a student file that is missing."""
        found: dict[str, bytes] = {}
        for path in self.student_files:
            if not path.exists():
                raise FileNotFoundError(f"a student file of the course is missing: {path}")
            found.update(file_tree(path, prefix + path.name))
        return found

    def infer_lab(self, grade_ids: set[str], file_stem: str = "") -> str | None:
        """The lab whose cells a notebook's grade_ids match best, else one named like the file."""
        best, best_count = None, 0
        labs = self.checkable_labs()
        for lab in labs:
            try:
                count = len(grade_ids & set(self.spec(lab).by_id))
            except LabError:
                continue
            if count > best_count:
                best, best_count = lab, count
        if best:
            return best
        return next((lab for lab in labs if lab == file_stem or lab in file_stem), None)


def file_tree(root: Path, prefix: str) -> dict[str, bytes]:
    """The files of ``root`` (a student file or folder) as ``{prefix/relative path: bytes}``,
    without dot-files, ``__pycache__`` and ``.pyc``: what a student has of it, in the handout,
    the Gradescope zip and every grading workspace."""
    if root.is_file():
        return {prefix: root.read_bytes()}
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        hidden = any(part == "__pycache__" or part.startswith(".") for part in relative.parts)
        if path.is_file() and not hidden and path.suffix != ".pyc":
            found[f"{prefix}/{relative.as_posix()}"] = path.read_bytes()
    return found


@lru_cache(maxsize=16)
def _load_cached(path: Path, lab: str, mtime_ns: int) -> Lab:
    return load_lab(path, lab)
