"""Execute a lab's solution notebook headless and keep the executed notebook and its figures."""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.course import REPO_ROOT, Course
from autograder.execute import Limits, cell_progress, code_cell_indices, execute

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class RunReport:
    """Where the executed notebook and figures went, how long it took, and what failed."""

    notebook: Path
    figures: list[Path]
    seconds: float
    cells: int
    failed: int | None  # index of the first failing cell, or None
    failure: str  # its traceback (plain text), or why the run stopped


def run_lab(
    course: Course,
    lab: str,
    profile: str,
    out_dir: Path,
    cell_timeout: float | None = None,
    progress: bool = True,
    final_code: str | None = None,
) -> RunReport:
    """Run ``lab``'s source notebook under ``profile``; write ``out_dir/<lab>-<profile>.ipynb``
    and its PNG figures under ``out_dir/<lab>-<profile>_files/``. Stops at the first error.
    ``final_code``, if given, runs last in the same kernel as one more cell (to read results)."""
    source = course.source_path(lab)
    course.load(lab)  # a clear error for unknown labs
    notebook = nbformat.read(source, as_version=4)
    if final_code is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(final_code))
    env = {key: value for key, value in os.environ.items() if key != "NBGRADER_EXECUTION"}
    env["LAB_PROFILE"] = profile
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    limits = Limits(cell_timeout=cell_timeout, notebook_timeout=None, memory_mb=None, file_mb=None)
    code_cells = len(code_cell_indices(notebook))
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="autograder-run-") as cwd,
        cell_progress(notebook, f"{lab} ({profile})", progress) as advance,
    ):
        execution = execute(
            notebook, cwd=Path(cwd), env=env, limits=limits, stop_on_error=True, on_cell=advance
        )
    seconds = time.monotonic() - began
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, figures_dir = output_paths(out_dir, lab, profile)
    nbformat.write(execution.notebook, path)
    figures = extract_figures(execution.notebook, figures_dir)
    failed = next((i for i, run in sorted(execution.runs.items()) if not run.passed), None)
    failure = ""
    if failed is not None:
        run = execution.runs[failed]
        failure = "\n".join(_ANSI.sub("", line) for line in run.traceback) or (
            f"{run.ename}: {run.evalue}"
        )
    return RunReport(path, figures, seconds, code_cells, failed, failure)


def output_paths(out_dir: Path, lab: str, profile: str) -> tuple[Path, Path]:
    """Where ``run_lab`` writes the executed notebook, and the folder of its figures."""
    stem = f"{lab}-{profile}"
    return Path(out_dir) / f"{stem}.ipynb", Path(out_dir) / f"{stem}_files"


def extract_figures(notebook, folder: Path) -> list[Path]:
    """Save every PNG output as ``cell<index>-<n>.png`` in a fresh ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for index, cell in enumerate(notebook.cells):
        count = 0
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if not data:
                continue
            count += 1
            path = folder / f"cell{index:03d}-{count}.png"
            path.write_bytes(base64.b64decode(data if isinstance(data, str) else "".join(data)))
            written.append(path)
    return written
