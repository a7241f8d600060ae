"""Grade submissions: restore, run in two kernels, score, and keep every result.

One submission goes through ``grade_submission``: read it (``unreadable`` when it cannot be),
restore the test and locked cells from the source (``tampered`` rows when they were changed),
then run it with two kernels (``autograder.execute``), each in a fresh temporary folder:

- the **student's kernel** runs every cell the student has (solutions, provided cells, their
  own cells), never a test cell, in a sandbox (``autograder.sandbox``: no network, the
  course's sources, the grade folder and the submissions hidden, processes bounded and all
  killed at the end, memory and time capped), with ``LAB_PROFILE=smoke`` and
  ``NBGRADER_EXECUTION=autograde``;
- the **judge kernel** is trusted: it runs the lab's set-up cells and then each test cell
  (visible checks and hidden tests, from the source) when the student's kernel has run every
  cell before it. The names a test takes from the student are proxies
  (``autograder.judge_runtime``): a call runs the student's function in the student's kernel
  and brings back its result, and the arguments it changed in place, as data that cannot run
  code in the judge.

Both kernels are forked from templates that already imported the lab's libraries
(``autograder.forking``, ``preloads``): fresh processes that skip the imports.

A test cell earns its points iff it runs in the judge without raising. So the verdict never
depends on anything the student's kernel can change: monkeypatching ``builtins``, ``torch``,
``numpy``, the assert statement or IPython's input transformers, reading ``In``, or writing
files changes only the student's own kernel. The hidden tests never reach the student's
kernel; only the objects a test passes to a student function do (with the code of classes
and functions a test defines to build them).

``grade_batch`` does that for many submissions, in parallel processes, writing each student's
result atomically to ``DIR/.results/<lab>/<student>.json`` as soon as it is done, so that an
interrupted batch resumes where it stopped; the CSVs are rebuilt from those files. Its worker
processes end as soon as it is gone, however it died (``_follow_grader``).

Limits of this design, on purpose: what a student function returns must be built from data,
PyTorch's classes and the course's (``helpers``) classes, or it is refused with a message; a
value computed by a provided cell in the student's kernel is taken from that kernel as it is.
A test may swap in a reference version of another student function for one call (Lab 3's
``quantize_model`` and ``prune_finetune`` cells do, to grade one function at a time); that
reference then runs in the student's kernel for that call.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import re
import select
import shutil
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from autograder import forking, sandbox
from autograder.course import REPO_ROOT, Course, file_tree
from autograder.execute import Execution, JudgeSpec, Limits, execute, kernel_env
from autograder.notebooks import (
    Lab,
    Restored,
    Unreadable,
    cell_kind,
    grade_ids,
    hidden_lines,
    is_blank,
    nbgrader_meta,
    read_submission,
    restore,
    source_text,
)
from autograder.sandbox import SandboxSpec

RESULT_VERSION = 1
GRADING_ENV = {"NBGRADER_EXECUTION": "autograde"}
# A submitted file larger than this is not read (``unreadable``): a notebook with the labs'
# outputs is a few MiB; parsing a giant one (a loop that printed for hours) could take more
# memory than its grading worker has.
MAX_SUBMISSION_MB = 256
# The disk space (MiB) extracting a zip of submissions leaves free at the least: a zip of many
# large notebooks stops the run (exit 2) before it fills the disk.
DISK_RESERVE_MB = 512
# The judge's error when the student's code removed or replaced the grader's request folder
# (judge_runtime.GraderFilesTampered: the judge runs a copy of that file, not imported here).
TAMPERED_ERROR = "GraderFilesTampered"
# Severity order of statuses, most severe first: a student's total takes the first that occurs.
STATUS_ORDER = ("unreadable", "error", "timeout", "tampered", "manual", "ok")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_FRAME = re.compile(r"Cell In\[(\d+)\], line (\d+)")


class GraderError(RuntimeError):
    """The grader itself failed on a submission (stored as an internal error, regraded later)."""


class UsageError(ValueError):
    """Wrong command-line usage (missing file, unknown lab): the only non-zero exit of grade."""


@dataclass(frozen=True)
class Settings:
    """How to grade: which course and lab, under which profile and limits."""

    course: Course
    lab: str
    limits: Limits = Limits()
    profile: str = "smoke"
    data_seed: Path | None = None  # LAB_DATA each submission gets a copy of (see prime_data)
    hidden: tuple[Path, ...] = ()  # paths to hide from the student's kernel besides hidden_paths
    skip: frozenset[str] = frozenset()  # grade_ids of locked cells not to run (tests only)
    code_sha256: str = ""  # code_fingerprint of the course (set by grade_batch)


@dataclass(frozen=True)
class Submission:
    """One notebook to grade, with the student it belongs to."""

    student: str
    path: Path  # a readable local file (extracted from a zip when needed)
    origin: str  # what to show the instructor: the path, or zip!member
    timestamp: float  # seconds since the epoch: nbgrader's timestamp.txt, else the mtime
    refused: str = ""  # why the file is not read (it is graded unreadable), if it is not


@dataclass
class BatchReport:
    """What a batch did: who was graded now, who was kept from before, what was ignored."""

    graded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # superseded duplicate submissions
    results: list[dict] = field(default_factory=list)  # every result in the output folder


# --------------------------------------------------------------------------- one submission


@contextmanager
def workspace(
    course: Course,
    notebook_name: str,
    data: bytes,
    data_seed: Path | None = None,
    judge: bool = False,
) -> Iterator[tuple[Path, dict]]:
    """A temporary folder holding only what a student has; yields (cwd, extra env).

    ``LAB_DATA`` is a fresh folder, a private copy of ``data_seed`` when given (so one
    submission cannot change another's data). ``rpc/`` beside the working folder is where the
    judge's requests to the student's kernel go. ``judge``: the judge's own folder, which
    also holds the judge's runtime (``autograder_judge`` on its ``PYTHONPATH``).
    """
    root = forking.owned_tempdir("autograder-judge-" if judge else "autograder-")
    try:
        work, lib, data_dir = root / "work", root / "lib", root / "data"
        for folder in (work, lib, root / "home", root / "tmp", root / "rpc"):
            folder.mkdir()
        if data_seed is not None and data_seed.is_dir():
            shutil.copytree(data_seed, data_dir)
        else:
            data_dir.mkdir()
        (work / notebook_name).write_bytes(data)
        for path in course.student_files:
            if path.exists():
                for name, content in file_tree(path, path.name).items():
                    (lib / name).parent.mkdir(parents=True, exist_ok=True)
                    (lib / name).write_bytes(content)
        if judge:
            shutil.copy2(Path(__file__).with_name("judge_runtime.py"), lib / "autograder_judge.py")
        extra = {
            "PYTHONPATH": str(lib),
            "LAB_DATA": str(data_dir),
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "CUDA_VISIBLE_DEVICES": "",
            "LAB_DEVICE": "cpu",
            # getpass.getuser() reads these first: a kernel's uid may have no account (the
            # fallback's own uids), and the grader's user name is none of the kernel's business
            "USER": "student",
            "LOGNAME": "student",
        }
        yield work, extra
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_in_workspace(
    notebook,
    course: Course,
    name: str,
    data: bytes,
    limits: Limits,
    profile: str,
    data_seed: Path | None = None,
    keep_data: Path | None = None,
    lab: Lab | None = None,
    judged: frozenset[int] = frozenset(),
    hidden: tuple[Path, ...] | None = None,
) -> Execution:
    """Execute ``notebook`` the way grading does (fresh folder, kernel, limits, profile).

    ``lab`` and ``judged``: run the cells at the indices ``judged`` (the test cells) in a
    trusted judge kernel instead of the student's (see ``judge_spec``). ``hidden``: run the
    student's kernel in a sandbox (``autograder.sandbox``) where those paths are hidden.
    ``keep_data``: copy the run's ``LAB_DATA`` there afterwards (to prime a data seed).
    """
    with contextlib.ExitStack() as stack:
        cwd, extra = stack.enter_context(workspace(course, name, data, data_seed))
        env = kernel_env({**extra, **GRADING_ENV, "LAB_PROFILE": profile}, threads=limits.threads)
        judge = None
        student_preload: tuple[str, ...] = ()
        if lab is not None and judged:
            student_preload, judge_preload = preloads(lab, course)
            judge_cwd, judge_extra = stack.enter_context(
                workspace(course, "judge.ipynb", b"{}", data_seed, judge=True)
            )
            judge = judge_spec(
                lab,
                judged,
                judge_cwd,
                judge_extra,
                cwd.parent / "rpc",
                limits,
                profile,
                judge_preload,
            )
        sandbox = None
        if hidden is not None:
            sandbox = SandboxSpec(hidden=hidden, workspace=cwd.parent, max_processes=256)
        execution = execute(
            notebook,
            cwd=cwd,
            env=env,
            limits=limits,
            kernel_log=cwd.parent / "kernel.log",
            judge=judge,
            sandbox=sandbox,
            preload=student_preload,
        )
        if keep_data is not None:
            shutil.copytree(extra["LAB_DATA"], keep_data)
        return execution


def hidden_paths(course: Course, out: Path | None = None, inputs: Iterable[Path] = ()) -> tuple:
    """What a student's kernel must not see: the course (sources with solutions and hidden
    tests, reference outputs, git history), the grade folder, the submissions, the other
    workspaces (the temporary folder) and the grader's home. Its own workspace and the Python
    installation stay visible (``autograder.sandbox``)."""
    paths = [course.root, REPO_ROOT, Path(tempfile.gettempdir()), Path.home()]
    paths += [Path(p) for p in inputs]
    if out is not None:
        paths.append(Path(out))
    unique = []
    for path in paths:
        resolved = path.resolve()
        if resolved not in unique and resolved != Path("/"):
            unique.append(resolved)
    return tuple(unique)


def setup_cells(lab: Lab) -> list:
    """The lab's set-up cells: its locked code cells before the first solution or graded cell,
    only those with "setup" in their grade_id when there are such."""
    leading = []
    for cell in lab.notebook.cells:
        kind = cell_kind(cell)
        if kind in ("solution", "test", "autograded", "manual"):
            break
        if kind == "locked" and cell.cell_type == "code":
            leading.append(copy.deepcopy(cell))
    named = [c for c in leading if "setup" in str(c.metadata.nbgrader.grade_id)]
    return named or leading


def _parse_cell(source: str) -> ast.Module | None:
    """A code cell's syntax tree, magics and shell lines blanked; None when it does not parse."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names read, names bound) anywhere in ``source``; magics and shell lines ignored."""
    tree = _parse_cell(source)
    if tree is None:
        return set(), set()
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:  # except ... as name
            bound.add(node.name)
    return read, bound


def _top_level_names(source: str) -> set[str]:
    """Names a cell binds at top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def student_names(lab: Lab) -> list[str]:
    """Names the judge takes from the student's kernel.

    What the solution cells define at top level, and what the test cells read that neither
    the set-up cells, the test cells nor Python define (values computed by the notebook's
    other cells, such as an accuracy after fine-tuning).
    """
    names: set[str] = set()
    for cell in lab.cells:
        if cell.kind in ("solution", "autograded") and cell.cell_type == "code":
            names |= _top_level_names(cell.source)
    judge_bound: set[str] = set(dir(builtins))
    for cell in setup_cells(lab):
        judge_bound |= _names(cell.source)[1]
    for cell in lab.cells:
        if cell.kind == "test":
            read, bound = _names(cell.source)
            names |= read - judge_bound - bound
            judge_bound |= bound
    return sorted(names - set(dir(builtins)))


JUDGE_INSTALL = "import autograder_judge as _autograder_judge\n_autograder_judge.install()\ndel _autograder_judge\n"
# What every kernel imports, whatever the lab; and what a module's first use imports later
# (PyTorch's first optimizer imports its compiler stack: 2 s on a 2-core machine).
KERNEL_MODULES = ("ipykernel.kernelapp", "ipykernel.ipkernel")
IMPORTED_LATER = {"torch": ("torch._dynamo",)}


def imported_modules(sources: Iterable[str], package: str = "") -> tuple[str, ...]:
    """Modules the code in ``sources`` imports at top level, in order (``from a.b import c``
    gives ``a.b``, and ``a.b.c`` in case ``c`` is a module). Relative imports are resolved
    in ``package`` (left out without one); magics and shell lines are skipped."""
    found: list[str] = []
    for source in sources:
        tree = _parse_cell(source)
        for node in tree.body if tree is not None else []:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    if not package or not parts:
                        continue
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found += [name for name in names if name and name not in found]
    return tuple(found)


def _provided_modules(course: Course) -> dict[str, tuple[str, str]]:
    """The Python modules of the files a student has: name -> (source, package)."""
    modules = {}
    for path in course.student_files:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.suffix != ".py" or not file.is_file():
                continue
            parts = list(file.relative_to(path.parent).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join(parts)
            package = name if is_package else ".".join(parts[:-1])
            modules[name] = (file.read_text(errors="replace"), package)
    return modules


def preloads(lab: Lab, course: Course) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Modules the kernel templates import (``autograder.forking``): (the student's, the
    judge's).

    What the lab's set-up cells import, followed (statically) through the files a student
    has: the student's template imports the other modules found (a student's kernel imports
    the course's files from its own folder), plus what a module's first use imports later
    (``IMPORTED_LATER``); the judge's imports the course's files too, and its runtime.
    Nothing else: an imported library counts against the kernel's memory cap (address
    space), so a kernel starts with what the lab's set-up would have imported anyway.
    """
    provided = _provided_modules(course)
    queue = list(imported_modules(source_text(cell) for cell in setup_cells(lab)))
    packages = {name.split(".")[0] for name in provided}
    outside: list[str] = []
    reached: list[str] = []
    while queue:
        name = queue.pop(0)
        if name in outside or name in reached:
            continue
        if name in provided:
            reached.append(name)
            source, package = provided[name]
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
            queue += [*parents, *imported_modules([source], package)]
        elif name.split(".")[0] not in packages:
            outside.append(name)  # a library (a name under a course package is not a module)
    later = [m for name in outside for m in IMPORTED_LATER.get(name, ()) if m not in outside]
    student = tuple(dict.fromkeys((*outside, *later, *KERNEL_MODULES)))
    judge = tuple(dict.fromkeys((*outside, *reached, *KERNEL_MODULES, "autograder_judge")))
    return student, judge


def judge_spec(
    lab: Lab,
    judged: frozenset[int],
    cwd: Path,
    extra: dict,
    rpc_dir: Path,
    limits: Limits,
    profile: str,
    preload: tuple[str, ...] = (),
) -> JudgeSpec:
    """The judge kernel of one submission: the lab's set-up cells, then the test cells
    (forked from a template that imported ``preload``, the judge's list of ``preloads``)."""
    env = kernel_env(
        {
            **extra,
            **GRADING_ENV,
            "LAB_PROFILE": profile,
            "AUTOGRADER_RPC_DIR": str(rpc_dir),
            # which folder it is, taken now (before the student's code runs): the judge
            # refuses a folder put in its place
            "AUTOGRADER_RPC_ID": "{0.st_dev}:{0.st_ino}".format(rpc_dir.stat()),
            "AUTOGRADER_STUDENT_NAMES": json.dumps(student_names(lab)),
            "AUTOGRADER_CELL_TIMEOUT": str(limits.cell_timeout or 10**6),
        },
        threads=limits.threads,
    )
    prelude = tuple(source_text(cell) for cell in setup_cells(lab)) + (JUDGE_INSTALL,)
    return JudgeSpec(
        cells=judged,
        prelude=prelude,
        env=env,
        cwd=cwd,
        lib=Path(extra["PYTHONPATH"]),
        preload=preload,
        log=cwd.parent / "kernel.log",  # the judge's own folder, not the student's
    )


def prime_data(settings: Settings, cache: Path, log=print) -> Path | None:
    """Run the lab's set-up cells once so that every submission starts from their data.

    The set-up cells are the source's locked code cells before its first solution or graded
    cell, only those with "setup" in their grade_id when there are such (for lab 1:
    ``lab1_setup``: imports, data, the cached smoke model). What they leave in ``LAB_DATA``
    becomes the seed each submission gets a private copy of. Cached under ``cache`` by the
    lab source, the student files and the profile; None when the lab has no set-up cells.
    Raises ``UsageError`` when no kernel can start (a memory cap too low, say) or when the
    set-up cells fail (an unknown or data-hungry profile, say): every submission would fail
    there alike, and be stored as the grader's failure.
    """
    lab = settings.course.load(settings.lab)
    setup = setup_cells(lab)
    if not setup:
        return None
    digest = hashlib.sha256(lab.path.read_bytes() + settings.profile.encode())
    for _, path in _python_files(settings.course.student_files):
        digest.update(path.name.encode() + path.read_bytes())
    seed = Path(cache) / f"{lab.name}-{settings.profile}-{digest.hexdigest()[:16]}"
    if (seed / "data").is_dir():
        return seed / "data"
    notebook = nbformat.v4.new_notebook(cells=setup, metadata=lab.notebook.metadata)
    staging = Path(cache) / f".{seed.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    limits = settings.limits
    execution = run_in_workspace(
        notebook,
        settings.course,
        "setup.ipynb",
        b"{}",
        limits,
        settings.profile,
        keep_data=staging / "data",
    )
    if execution.grader_error:  # no kernel starts: every submission would fail the same way
        shutil.rmtree(staging, ignore_errors=True)
        memory = f" (--memory-mb {limits.memory_mb}: too low?)" if limits.memory_mb else ""
        raise UsageError(
            f"a grading kernel cannot start here{memory}: {execution.grader_error}; "
            "nobody was graded"
        )
    failed = [run for run in execution.runs.values() if not run.passed]
    if failed:  # locked cells, the same in every submission: each would fail there too
        shutil.rmtree(staging, ignore_errors=True)
        hint = (
            ""
            if settings.profile == "smoke"
            else f"; under --profile {settings.profile} the lab needs CIFAR-10 and the trained "
            "checkpoint, which grading's fresh workspaces do not have: grade under smoke"
        )
        raise UsageError(
            f"the set-up cells of {lab.name} fail under the {settings.profile} profile "
            f"({failed[0].ename}: {failed[0].evalue[:200]}){hint}; every submission runs them, "
            "so nobody was graded"
        )
    try:
        staging.rename(seed)
    except OSError:  # another process primed it first
        shutil.rmtree(staging, ignore_errors=True)
    return seed / "data"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """``sha256`` of a file's bytes, read in pieces."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def submission_sha256(submission: Submission) -> str:
    """What identifies a submission's content: the file's bytes, or for a link that is not
    followed the link itself (what it points to is never read)."""
    if submission.refused and submission.path.is_symlink():
        return sha256(os.fsencode(os.readlink(submission.path)))
    return file_sha256(submission.path)


def lab_fingerprint(lab: Lab) -> str:
    """Changes when the lab's source notebook changes (results graded before are then stale)."""
    return sha256(lab.path.read_bytes())


def code_fingerprint(course: Course) -> str:
    """Changes when the code that grading runs changes: the student files (``helpers/``, which
    the tests call) and this package. Results graded with other code are kept, with a warning
    (``grade_batch``): a fix there may or may not change a grade."""
    digest = hashlib.sha256()
    for root, path in _python_files([*course.student_files, Path(__file__).parent]):
        name = path.relative_to(root.parent).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _python_files(roots: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(root, file) for each Python file under each folder of ``roots``, in order, and for
    each root that is a file itself: what the student files and the grader's code are."""
    return [
        (root, path)
        for root in roots
        for path in (sorted(root.rglob("*.py")) if root.is_dir() else [root])
        if path.is_file()
    ]


def grade_submission(
    submission: Submission, settings: Settings, feedback_path: Path | None = None
) -> dict:
    """Grade one submission; returns its result (see ``_result``) and writes its feedback."""
    from autograder import report  # nbconvert is slow to import; only workers need it

    lab = settings.course.load(settings.lab)
    began = time.monotonic()

    def unreadable(why: str, digest: str) -> dict:
        result = _result(submission, settings, lab, digest, unreadable_rows(lab, why), [])
        result["seconds"] = round(time.monotonic() - began, 2)
        if feedback_path:
            report.write_feedback(feedback_path, result, lab, None, None)
        return result

    if submission.refused:
        return unreadable(submission.refused, submission_sha256(submission))
    size = submission.path.stat().st_size
    if size > MAX_SUBMISSION_MB << 20:  # not read: parsing it could take the worker's memory
        return unreadable(
            f"the file is larger than the {MAX_SUBMISSION_MB} MiB a submission may have; "
            "clear its outputs (Edit > Clear Outputs of All Cells), save it and submit it again",
            file_sha256(submission.path),
        )
    data = submission.path.read_bytes()
    try:
        notebook = read_submission(data)
    except Unreadable as why:
        return unreadable(str(why), sha256(data))
    submitted_ids = grade_ids(notebook)
    if not submitted_ids & set(lab.by_id):
        why = f"none of the cells of {lab.name} are in this notebook: is it the right lab?"
        return unreadable(why, sha256(data))
    restored = restore(notebook, lab)
    for grade_id in settings.skip:
        if grade_id in restored.index_of and lab.by_id[grade_id].kind == "locked":
            restored.notebook.cells[restored.index_of[grade_id]].source = ""
    judged = frozenset(
        restored.index_of[cell.grade_id]
        for cell in lab.cells
        if cell.kind == "test" and cell.grade_id in restored.index_of
    )
    execution = run_in_workspace(
        restored.notebook,
        settings.course,
        f"{lab.name}.ipynb",
        data,
        settings.limits,
        settings.profile,
        data_seed=settings.data_seed,
        lab=lab,
        judged=judged,
        hidden=settings.hidden or hidden_paths(settings.course),
    )
    if execution.grader_error:
        raise GraderError(execution.grader_error)
    rows = score(lab, restored, execution)
    notes = list(restored.notes)
    if execution.stopped:
        notes.append(f"Execution stopped early: {execution.stopped}.")
    result = _result(submission, settings, lab, sha256(data), rows, notes, restored)
    result["seconds"] = round(time.monotonic() - began, 2)
    result["isolation"] = execution.isolation
    result["cells"] = [
        [index, _grade_id_at(restored, index), run.status, round(run.seconds, 2)]
        for index, run in sorted(execution.runs.items())
    ]
    result["limits_hit"] = limits_hit(execution)
    result["answers"] = written_answers(lab, notebook)  # for `written` (autograder/written.py)
    if feedback_path:
        report.write_feedback(feedback_path, result, lab, restored, execution)
    return result


# A written answer is kept with the result up to this many characters (a few sentences are
# asked for; a pasted notebook would bloat every stored result).
MAX_ANSWER_CHARS = 20_000


def written_answers(lab: Lab, submitted: NotebookNode) -> dict[str, str | None]:
    """The text of each written answer in the submitted notebook, by grade_id: the first cell
    claiming it that is not blank (an answer typed into a pasted copy of the cell counts),
    else the blank one; None when no cell claims it (its metadata was removed)."""
    cells: dict[str, list[str]] = {}
    for cell in submitted.cells:
        meta = nbgrader_meta(cell)
        if meta:
            cells.setdefault(str(meta["grade_id"]), []).append(source_text(cell))
    found: dict[str, str | None] = {}
    for question in lab.questions:
        if question.kind != "manual":
            continue
        texts = cells.get(question.grade_id)
        if not texts:
            found[question.grade_id] = None
            continue
        text = next((t for t in texts if not is_blank(t)), texts[0])
        if len(text) > MAX_ANSWER_CHARS:
            text = text[:MAX_ANSWER_CHARS] + "\n[... cut: the rest is in the notebook]"
        found[question.grade_id] = text
    return found


def _grade_id_at(restored: Restored, index: int) -> str:
    meta = nbgrader_meta(restored.notebook.cells[index])
    return str(meta["grade_id"]) if meta else ""


def unreadable_rows(lab: Lab, why: str) -> list[dict]:
    return [
        _row(q.grade_id, 0.0, q.points, "unreadable", f"not graded: {why}") for q in lab.questions
    ]


def _row(question: str, score: float, max_score: float, status: str, message: str) -> dict:
    return {
        "question": question,
        "score": score,
        "max_score": max_score,
        "status": status,
        "message": message,
    }


def _result(
    submission: Submission,
    settings: Settings,
    lab: Lab,
    digest: str,
    rows: list[dict],
    notes: list[str],
    restored: Restored | None = None,
) -> dict:
    statuses = {row["status"] for row in rows}
    if restored is not None and restored.changes:
        statuses.add("tampered")
    status = next(s for s in STATUS_ORDER if s in statuses or s == "ok")
    return {
        "version": RESULT_VERSION,
        "student": submission.student,
        "lab": lab.name,
        "origin": submission.origin,
        "sha256": digest,  # of the submitted file
        "source_sha256": lab_fingerprint(lab),
        "code_sha256": settings.code_sha256,
        "profile": settings.profile,
        "limits": asdict(settings.limits),
        "graded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status,
        "score": sum(row["score"] for row in rows),
        "max_score": sum(row["max_score"] for row in rows),
        "rows": rows,
        "changes": dict(restored.changes) if restored else {},
        "notes": notes,
        "internal_error": False,
        "seconds": 0.0,
    }


def score(lab: Lab, restored: Restored, execution: Execution) -> list[dict]:
    """One row per graded cell of the lab, in notebook order."""
    tampered = tampered_questions(lab, restored)
    autograded_positions = sorted(
        restored.index_of[q.grade_id] for q in lab.autograded if q.grade_id in restored.index_of
    )
    rows = []
    for question in lab.questions:
        position = restored.index_of.get(question.grade_id)
        if question.kind == "manual":
            message = "written answer: graded by a person"
            if position is None:
                message += " (the answer cell was not found: its metadata may have been removed)"
            rows.append(_row(question.grade_id, 0.0, question.points, "manual", message))
            continue
        run = execution.runs.get(position) if position is not None else None
        if run is None:
            rows.append(
                _row(question.grade_id, 0.0, question.points, "error", "the cell was not run")
            )
            continue
        cell = execution.notebook.cells[position]
        if run.status == "ok":
            status, points, message = "ok", question.points, "passed"
        elif run.status == "error" and run.ename == TAMPERED_ERROR:
            status, points, message = "tampered", 0.0, f"failed: {run.evalue.strip()}"
        elif run.status == "error":
            before = runs_before(execution, autograded_positions, position)
            status, points = "ok", 0.0
            message = failure_message(cell, run, question.kind, before)
            earlier = [r for r in before if r.status == "timeout"]
            if earlier:
                status = "timeout"
                message += f" (an earlier cell timed out: {earlier[0].evalue})"
        elif run.status == "timeout":
            status, points, message = "timeout", 0.0, run.evalue
        elif run.status == "dead":
            status, points, message = "error", 0.0, run.evalue
        else:  # not_run
            status, points = execution.stopped_status or "error", 0.0
            message = f"not run: {execution.stopped}"
        if question.grade_id in tampered and status == "ok":
            status = "tampered"
        if question.grade_id in tampered:
            message = f"{message}; {tampered[question.grade_id]}"
        rows.append(_row(question.grade_id, points, question.points, status, message))
    return rows


def runs_before(execution: Execution, autograded: list[int], position: int) -> list:
    """The runs of the cells between the autograded cell before ``position`` (in the sorted
    ``autograded`` positions) and ``position``: the solution cells its test depends on."""
    before = [p for p in autograded if p < position]
    start = before[-1] + 1 if before else 0
    return [execution.runs[i] for i in range(start, position) if i in execution.runs]


def tampered_questions(lab: Lab, restored: Restored) -> dict[str, str]:
    """Autograded questions affected by a changed protected cell, with what changed.

    A changed graded cell affects its own row; a changed locked code cell (set-up code) affects
    every autograded row after it; a changed locked markdown cell affects none (the
    submission's total is still marked ``tampered``).
    """
    affected: dict[str, list[str]] = {}
    order = [cell.grade_id for cell in lab.cells]
    for grade_id, changes in restored.changes.items():
        cell = lab.by_id[grade_id]
        summary = f"cell {grade_id} was changed and restored ({changes[0].splitlines()[0]})"
        if cell.kind in ("test", "autograded"):
            targets = [grade_id]
        elif cell.kind == "locked" and cell.cell_type == "code":
            after = order[order.index(grade_id) + 1 :]
            targets = [q.grade_id for q in lab.autograded if q.grade_id in after]
        else:
            targets = []
        for target in targets:
            affected.setdefault(target, []).append(summary)
    return {gid: "; ".join(texts) for gid, texts in affected.items()}


def failure_message(cell, run, kind: str, before: Iterable = ()) -> str:
    """A failed cell's reason in plain words, without showing hidden test source. ``before``:
    the runs of the cells since the previous autograded one (``runs_before``): a name a test
    cannot find because the solution cell defining it still raises NotImplementedError is
    not answered yet, not a mistake to explain."""
    evalue = run.evalue.strip()
    if len(evalue) > 600:
        evalue = evalue[:600] + " ..."
    unanswered = run.ename == "NameError" and any(r.ename == "NotImplementedError" for r in before)
    if run.ename == "NotImplementedError" or unanswered:
        return "not answered yet: a solution cell still raises NotImplementedError"
    text = f"{run.ename}: {evalue}" if evalue else run.ename
    if run.ename == "NameError":
        crashed = [r for r in before if r.ename]
        if crashed:  # say why the name is missing: a SyntaxError there reads as a NameError here
            first = crashed[-1].evalue.strip().splitlines()[:1]
            why = f"{crashed[-1].ename}: {first[0][:300]}" if first else crashed[-1].ename
            text += f" (the cell that should define it failed: {why})"
        else:
            text += " (did the cell that should define it run without an error?)"
    if kind != "test":
        return f"failed: {text}"
    count = cell.get("execution_count")
    lines = [int(m.group(2)) for line in run.traceback for m in _frames(line, count)]
    where = ""
    if lines:
        where = " a hidden test" if lines[0] in hidden_lines(cell.source) else " a visible check"
    return f"failed{where}: {text}"


def _frames(line: str, count: int | None) -> Iterable[re.Match]:
    for match in _CELL_FRAME.finditer(_ANSI.sub("", line)):
        if count is not None and int(match.group(1)) == count:
            yield match


# --------------------------------------------------------------------------- discovery


def safe_name(student: str) -> str:
    """A student id usable as a file name, and a different one for each id: an id made of
    lowercase letters, digits and ``_.@+-`` (at most 120 characters, not starting with ``.`` or
    ``_``) is its own name; any other id gets its characters cleaned and ``~`` plus 12 hex
    digits of its sha256, so that ``alice smith`` and ``alice_smith``, two emoji names, two
    long names with one beginning, or ``Alice`` and ``alice`` on a disk that ignores case,
    never share a result or a feedback folder."""
    if re.fullmatch(r"[a-z0-9@+-][a-z0-9_.@+-]{0,119}", student, flags=re.ASCII):
        return student
    cleaned = re.sub(r"[^\w.@+-]", "_", student, flags=re.ASCII).strip("._")[:100]
    return f"{cleaned or 'student'}~{sha256(student.encode())[:12]}"


def _student_for(path: Path, lab: str, root: Path | None) -> str:
    """Student id of a notebook (or a student's zip).

    Named on the command line (``root`` None): its file name without extension, or its folder
    when the file is named like the lab (``<student>/<lab>.ipynb``, nbgrader's
    ``<student>/<lab>/<lab>.ipynb``). Found in a folder ``root``: its file name when it lies
    directly in ``root``, else the folder directly below ``root`` that holds it (one folder
    per student, as LMS downloads and nbgrader's ``submitted/<student>/`` lay them out), so
    that names a student chose inside their own folder or zip never name another student.
    """
    if root is None:
        if path.stem != lab:
            return path.stem
        parent = path.parent
        if parent.name == lab and parent.parent != parent:
            parent = parent.parent  # submitted/<student>/<lab>/<lab>.ipynb
        return parent.name or path.stem
    parts = path.relative_to(root).parts
    if len(parts) == 1:
        return path.stem
    if parts[0] == "submitted" and len(parts) >= 3:
        return parts[1]  # a course folder holding nbgrader's submitted/<student>/...
    return parts[0]


def _skipped(name: str) -> bool:
    """A file or folder name never searched for submissions: hidden, or macOS zip debris."""
    return name.startswith(".") or name == "__MACOSX"


def _entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if not _skipped(entry.name)]


# The folders of an nbgrader course (``submitted/`` holds the students).
NBGRADER_FOLDERS = frozenset({"source", "release", "submitted", "autograded", "feedback"})


def _unwrap(folder: Path) -> Path:
    """Where the per-student folders start: ``folder``, or nbgrader's ``submitted/`` in it
    when it is an nbgrader course folder (only ``NBGRADER_FOLDERS`` and files that are not
    notebooks: ``source/``, ``release/`` ... hold no students), or the
    folder inside it when that is all it holds besides files that are not submissions (a
    download's wrapper folder, with an index file say) and it holds several folders,
    repeatedly. A ``submitted/`` folder's own folders are students: never entered."""
    while True:
        if folder.name == "submitted":
            return folder
        entries = [
            e for e in _entries(folder) if e.is_dir() or e.suffix.lower() in (".ipynb", ".zip")
        ]
        names = {e.name for e in entries if e.is_dir() and not e.is_symlink()}
        if "submitted" in names and names <= NBGRADER_FOLDERS and all(e.is_dir() for e in entries):
            return folder / "submitted"  # an nbgrader course folder
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            return folder
        inner = _entries(entries[0])
        if any(e.is_file() and e.suffix.lower() in (".ipynb", ".zip") for e in inner):
            return folder  # a student's folder: their notebook is in it
        if len([e for e in inner if e.is_dir() and not e.is_symlink()]) < 2:
            return folder
        folder = entries[0]


def _timestamp(path: Path, fallback: float | None = None) -> float:
    stamp = path.parent / "timestamp.txt"
    if stamp.is_file():
        try:
            from dateutil.parser import parse

            when = parse(stamp.read_text().strip())  # nbgrader: "2026-11-20 10:00:00.000 UTC"
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError, OSError):  # malformed: fall back to the mtime
            pass
    return fallback if fallback is not None else path.stat().st_mtime


def _notebooks_under(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if any(_skipped(part) for part in path.relative_to(folder).parts):
            continue
        if path.is_file() and path.suffix.lower() in (".ipynb", ".zip"):
            found.append(path)
    return found


def discover(
    inputs: Iterable[Path], lab: str, scratch: Path, empty_folders: bool = True
) -> list[Submission]:
    """Every submission in the given files, folders and zips (``UsageError`` if one is
    missing). ``empty_folders``: a student's folder in a given folder or zip that holds no
    notebook is a refused submission (``_without_notebook``); off for one student's upload,
    whose folders are not students (Gradescope)."""
    submissions: list[Submission] = []
    for given in inputs:
        given = Path(given)
        if not given.exists():
            raise UsageError(f"no such file or folder: {given}")
        if given.is_dir():
            root = _unwrap(given)
            found = []
            for path in _notebooks_under(root):
                found.extend(_from_file(path, lab, root, scratch))
            if empty_folders:
                found += _without_notebook(root, found, scratch, _files_by_folder(root))
            submissions += found
        else:
            submissions.extend(_from_file(given, lab, None, scratch))
    return [
        dataclasses.replace(
            s, student=as_text(s.student), origin=as_text(s.origin), refused=as_text(s.refused)
        )
        for s in submissions
    ]


def as_text(name: str) -> str:
    """A name from the file system as text that can be written anywhere (CSV, JSON, HTML). A
    name that is not valid UTF-8 (an LMS zip unpacked with Latin-1 names, say) comes with its
    bytes escaped as surrogates, which no UTF-8 file can hold; those bytes are written as
    ``\\xNN`` instead ("J\\xfcrgen"), so that two names stay two."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _from_file(path: Path, lab: str, root: Path | None, scratch: Path) -> list[Submission]:
    student = _student_for(path, lab, root)
    if root is not None and path.is_symlink():
        # Not followed: a link in a submissions folder (an LMS zip unpacked with `unzip`, an
        # upload) would have the grader read whatever it points to, the solutions included.
        why = "a symbolic link, not a notebook file: submit the notebook itself"
        return [Submission(student, path, str(path), _timestamp(path), refused=why)]
    if root is None and path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a readable zip (a download cut short?); download it again")
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        if root is None:
            return _from_zip(path, lab, scratch)  # the instructor's: a bulk download
        # A student's own zip: every notebook in it is theirs, whatever its names, dates or
        # timestamp.txt say; one too big for the disk is theirs to lose, not the batch's.
        stamp = _timestamp(path)
        try:
            found = _from_zip(path, lab, scratch, owned=True)
        except UsageError as error:
            return [Submission(student, path, str(path), stamp, refused=str(error))]
        return [dataclasses.replace(s, student=student, timestamp=stamp) for s in found]
    return [Submission(student, path, str(path), _timestamp(path))]


def _from_zip(path: Path, lab: str, scratch: Path, owned: bool = False) -> list[Submission]:
    """Extract a zip's notebooks (and nbgrader timestamps) safely under ``scratch``. ``owned``:
    one student's zip, whose notebooks may fill at most ``MAX_SUBMISSION_MB`` in all. Any zip
    that cannot be read or stored here is a ``UsageError`` naming it (for a student's own zip,
    that student's unreadable submission), never a traceback that stops the batch."""
    target = Path(tempfile.mkdtemp(prefix="zip-", dir=scratch))
    try:
        times, others = _extract(path, target, scratch, owned)
    except UsageError:
        raise
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        RuntimeError,
    ) as e:
        raise UsageError(
            f"{path}: cannot be read as a zip of notebooks ({type(e).__name__}: {e}); it is "
            "damaged, or holds names this machine cannot store: download it again, or unzip "
            "it and grade the folder"
        ) from None
    found = []
    root = _unwrap(target)
    for out in sorted(times):
        if out.suffix.lower() == ".zip":  # a student's own zip in a bulk download
            named = f"{path}!{out.relative_to(target).as_posix()}"
            for inner in _from_file(out, lab, root, scratch):
                found.append(
                    dataclasses.replace(inner, origin=inner.origin.replace(str(out), named, 1))
                )
        if out.suffix.lower() != ".ipynb":
            continue
        student = _student_for(out, lab, root)
        origin = f"{path}!{out.relative_to(target).as_posix()}"
        found.append(Submission(student, out, origin, _timestamp(out, times[out])))
    if owned:
        return found
    for out in times:  # what was extracted and is not a notebook: a timestamp, a zip
        if out.suffix.lower() != ".ipynb":
            others.setdefault(out.parent, []).append(out.name)
    return found + _without_notebook(root, found, scratch, others, origin=f"{path}!")


def _extract(
    path: Path, target: Path, scratch: Path, owned: bool
) -> tuple[dict[Path, float], dict[Path, list[str]]]:
    """``_from_zip``'s extraction into ``target``: each file written and its time, and the
    names of the files not extracted, by folder."""
    times: dict[Path, float] = {}
    room = shutil.disk_usage(target).free - (DISK_RESERVE_MB << 20)  # bytes it may write
    cap = (MAX_SUBMISSION_MB << 20) + 1  # per notebook: one byte over, enough to refuse it
    allowed = MAX_SUBMISSION_MB << 20 if owned else math.inf  # in all; one byte more: refused
    others: dict[Path, list[str]] = {}  # the files not extracted, by folder (names only)
    made = path.stat().st_mtime  # for an entry whose date is not one (a zero DOS date)
    with zipfile.ZipFile(path) as archive:
        # a bulk download's own zips are extracted too (each a student's); not a student's
        wanted = [info for info in archive.infolist() if _extracted(info, zips=not owned)]
        for info in archive.infolist():  # the folders of every entry, so that a student's
            name = _zip_name(info)  # folder without a notebook is seen (_without_notebook)
            if name.is_absolute() or ".." in name.parts:
                continue
            parts = name.parts if info.is_dir() else name.parts[:-1]
            shown = next((i for i, part in enumerate(parts) if _skipped(part)), len(parts))
            (target / Path(*parts[:shown])).mkdir(parents=True, exist_ok=True)
            if not info.is_dir() and not _extracted(info, zips=not owned) and _inside(info):
                others.setdefault(target / name.parent, []).append(name.name)
        # Refused before anything is written, from the sizes the zip declares: zipfile reads
        # no entry past its declared size (a larger one ends in BadZipFile, a bad CRC). The
        # copy below keeps the same account as it writes, should a reader ever differ.
        declared = sum(min(info.file_size, cap) for info in wanted)
        if declared > allowed:
            raise UsageError(_too_much_in_all())
        if declared > room:
            raise UsageError(_no_room(path, scratch))
        for info in wanted:
            out = target / _zip_name(info)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, open(out, "wb") as sink:
                    limit = min(cap, max(room, 0) + 1, max(allowed, 0) + 1)
                    copied = _copy_at_most(source, sink, limit)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
                raise UsageError(
                    f"{path}: {info.filename} cannot be extracted ({error or type(error).__name__})"
                    "; the zip is damaged: download it again"
                ) from None
            except RuntimeError as error:  # zipfile's "is encrypted, password required"
                if "encrypted" not in str(error):
                    raise
                raise UsageError(
                    f"{path}: {info.filename} is encrypted (password-protected); grading needs "
                    "a zip without a password"
                ) from None
            room -= copied
            allowed -= copied
            if allowed < 0:
                raise UsageError(_too_much_in_all())
            if room < 0:
                raise UsageError(_no_room(path, scratch))
            try:
                times[out] = datetime(*info.date_time).timestamp()
            except (ValueError, OverflowError):
                times[out] = made
            os.utime(out, (times[out], times[out]))  # a student's zip is dated by its time
    return times, others


def _zip_name(info: zipfile.ZipInfo) -> Path:
    """A zip entry's name as a path: ``/`` separates folders, and so does ``\\`` in a name
    without any ``/`` (zips written by some Windows tools). A name not flagged UTF-8 is
    read as cp437, as the format says, unless its bytes are UTF-8 (tools that write UTF-8
    without the flag: ``Jürgen``, not ``J├╝rgen``)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    if "/" not in name and "\\" in name:
        name = name.replace("\\", "/")
    return Path(name)


def _inside(info: zipfile.ZipInfo) -> bool:
    """Whether a zip entry names a place inside the zip's own folder, not one a submission
    search skips (hidden, macOS debris)."""
    name = _zip_name(info)
    if name.is_absolute() or ".." in name.parts:
        return False
    return not any(_skipped(part) for part in name.parts)


def _extracted(info: zipfile.ZipInfo, zips: bool = False) -> bool:
    """Whether a zip entry is extracted: notebooks, nbgrader's ``timestamp.txt`` and, with
    ``zips``, zips, inside the zip's own folder, not in a folder a submission search skips."""
    name = _zip_name(info)
    if info.is_dir() or not _inside(info):
        return False
    suffixes = (".ipynb", ".zip") if zips else (".ipynb",)
    return name.suffix.lower() in suffixes or name.name == "timestamp.txt"


def _files_by_folder(root: Path) -> dict[Path, list[str]]:
    """The names of the files under ``root`` that are not notebooks, by folder (a zip among
    them: one that gave no notebook, when its folder is listed)."""
    found: dict[Path, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if any(_skipped(part) for part in path.relative_to(root).parts):
            continue
        if path.is_file() and path.suffix.lower() != ".ipynb":
            found.setdefault(path.parent, []).append(path.name)
    return found


def _without_notebook(
    root: Path,
    found: list[Submission],
    scratch: Path,
    others: dict[Path, list[str]],
    origin: str = "",
) -> list[Submission]:
    """A refused submission for each student folder directly in ``root`` (``_unwrap``'s) that
    holds no notebook: a PDF, a script, an empty folder. So the
    student gets a row saying what they handed in, instead of no row at all. ``others``:
    the names of the files that are not notebooks, by folder."""
    students = {s.student for s in found}
    folders = []
    for entry in _entries(root):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name == "submitted":  # nbgrader's, beside loose notebooks: its students
            folders += [e for e in _entries(entry) if e.is_dir() and not e.is_symlink()]
        else:
            folders.append(entry)
    held: dict[Path, list[str]] = {folder: [] for folder in folders}
    for where, files in others.items():  # each listed folder, to the student folder above it
        top = next((f for f in (where, *where.parents) if f in held), None)
        if top is not None:
            held[top] += [f"{where.relative_to(top) / name}".removeprefix("./") for name in files]
    refused = []
    for folder in sorted(folders):
        if folder.name in students:
            continue
        names = sorted(held[folder])
        listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        why = (
            f"no notebook in the submission (it holds {listed or 'no file'}): a notebook "
            "(.ipynb) is what is graded"
        )
        handle, listing = tempfile.mkstemp(prefix="no-notebook-", suffix=".txt", dir=scratch)
        with os.fdopen(handle, "w", encoding="utf-8", errors="surrogateescape") as stream:
            stream.write("\n".join(names))  # what identifies it: unchanged, not graded again
        where = f"{origin}{folder.relative_to(root).as_posix()}/" if origin else f"{folder}/"
        refused.append(Submission(folder.name, Path(listing), where, 0.0, refused=why))
    return refused


def _too_much_in_all() -> str:
    return (
        f"a zip whose notebooks hold more than {MAX_SUBMISSION_MB} MiB in all: "
        "submit the notebook itself"
    )


def _no_room(path: Path, scratch: Path) -> str:
    return (
        f"{path}: its notebooks would leave less than {DISK_RESERVE_MB} MiB free "
        f"on the disk of {scratch}; free some space there, or set TMPDIR to a "
        "folder on a larger disk"
    )


def _copy_at_most(source, sink, limit: int) -> int:
    """Copy at most ``limit`` bytes; return how many were copied."""
    copied = 0
    while copied < limit:
        piece = source.read(min(1 << 20, limit - copied))
        if not piece:
            break
        sink.write(piece)
        copied += len(piece)
    return copied


def one_per_student(
    submissions: list[Submission],
    lab: str,
    other_labs: Iterable[str] = (),
    lab_ids: set[str] | None = None,
) -> tuple[list[Submission], list[str]]:
    """Each student's notebook to grade, and a line for each other one found (not graded).

    A student's folder may hold more than this lab's notebook: the course's other labs (an
    nbgrader ``submitted/<student>/`` tree holds every lab), copies (``<lab>-Copy1.ipynb``),
    an empty or broken file. So, as nbgrader names submissions: another lab's notebook (named
    ``<other>.ipynb``, or in a folder named ``<other>``) is not graded while the student has
    another notebook; then, with ``lab_ids`` (the lab's grade_ids), a notebook that reads
    and has a cell of the lab goes before one that does not; then a notebook named
    ``<lab>.ipynb`` goes before any other name; then the newest wins.
    """
    others = set(other_labs) - {lab}
    by_student: dict[str, list[Submission]] = {}
    for submission in submissions:
        by_student.setdefault(submission.student, []).append(submission)
    kept, ignored = [], []
    for student in sorted(by_student):
        candidates = sorted(by_student[student], key=lambda s: (s.timestamp, s.origin))

        def other_lab(s: Submission) -> str | None:
            names = {s.path.stem, s.path.parent.name}  # a zip's entries keep their folders
            return next((name for name in sorted(others) if name in names), None)

        ours = [s for s in candidates if other_lab(s) is None] or candidates
        usable = ours
        if lab_ids is not None and len(ours) > 1:
            usable = [s for s in ours if _has_a_cell_of(s, lab_ids)] or ours
        named = [s for s in usable if s.path.name == f"{lab}.ipynb"] or usable
        chosen = named[-1]
        kept.append(chosen)
        for other in candidates:
            if other is chosen:
                continue
            if other not in ours:
                why = f"{other_lab(other)}'s notebook, not {lab}'s"
            elif other not in usable:
                why = f"not a readable notebook with a cell of {lab}"
            elif other not in named:
                why = f"not named {lab}.ipynb"
            else:
                why = "older"
            ignored.append(f"{student}: ignored {other.origin} ({why}; graded {chosen.origin})")
    return kept, ignored


def _lab_cells(submission: Submission) -> set[str] | None:
    """The grade_ids of a submission's cells, or None when it is not read (refused, too
    large, not a notebook)."""
    try:
        if submission.refused or submission.path.stat().st_size > MAX_SUBMISSION_MB << 20:
            return None
        notebook = read_submission(submission.path.read_bytes())
    except (OSError, Unreadable):
        return None
    return grade_ids(notebook)


def _has_a_cell_of(submission: Submission, lab_ids: set[str]) -> bool:
    return bool((_lab_cells(submission) or set()) & lab_ids)


def _readable_before(out: Path, lab: str, kept: list[str]) -> bool:
    """Whether a result kept from an earlier run graded a notebook of ``lab`` (then the lab
    was right, and a few late notebooks of another lab are those students' mistakes)."""
    for student in kept:
        try:
            stored = json.loads((results_dir(out, lab) / f"{safe_name(student)}.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and stored.get("status") != "unreadable":
            return True
    return False


def check_lab(todo: list[Submission], lab: Lab, course: Course) -> None:
    """Refuse a batch (``UsageError``, before anything is graded) in which more readable
    notebooks have cells of one other lab than of ``lab``: ``--lab`` names the wrong lab, and
    grading would give the class 0. A single notebook is graded as usual (unreadable,
    saying so), as is a batch of unreadable files. (``grade_batch`` skips this when results
    of the lab are stored already, or when told to: ``--any-lab``.)"""
    if len(todo) < 2:
        return
    ours, others = 0, Counter()
    for submission in todo:
        ids = _lab_cells(submission)
        if ids is None:
            continue
        if ids & set(lab.by_id):
            ours += 1
            continue
        other = course.infer_lab(ids)
        if other is not None:
            others[other] += 1
    if others and others.most_common(1)[0][1] > ours:
        other, count = others.most_common(1)[0]
        raise UsageError(
            f"{count} of the {len(todo)} notebooks to grade are {other}'s, {ours} are "
            f"{lab.name}'s: grade them with --lab {other} (nothing was graded; --any-lab "
            f"grades them as {lab.name} all the same)"
        )


# --------------------------------------------------------------------------- batches


def results_dir(out: Path, lab: str) -> Path:
    return out / ".results" / lab


def shown(text: str) -> str:
    """Text taken from a submission (a student's id, a file name) as printed on the terminal:
    escaped when it holds a control character, which could move the cursor or rewrite lines."""
    return text if text.isprintable() else ascii(text)


def feedback_path(out: Path, student: str, lab: str) -> Path:
    return out / "feedback" / safe_name(student) / f"{lab}.html"


def write_json_atomic(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(value, stream, indent=1, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def load_results(out: Path) -> list[dict]:
    """Every stored result under ``out/.results``, for every lab."""
    results = []
    for path in sorted((out / ".results").glob("*/*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a partial write cannot happen (atomic); anything else is not ours
        if not isinstance(result, dict) or result.get("version") != RESULT_VERSION:
            continue
        if path.stem != safe_name(str(result.get("student"))):
            continue  # not where this grader writes that student (copied in, or older names)
        results.append(result)
    return results


# How a write past the file-size cap (RLIMIT_FSIZE) fails, by writer: Python's own files
# (EFBIG), torch.save (its zip writer finds the file shorter than it wrote) and numpy.save.
FILE_CAP_ERRORS = re.compile(
    rf"\[Errno {errno.EFBIG}\]|File too large|inline_container\.cc.*unexpected pos"
    r"|^OSError: \d+ requested and \d+ written"
)


def limits_hit(execution: Execution) -> list[str]:
    """Which limits a run ran into: ``time`` (a cell or the notebook timed out), ``memory``
    (a ``MemoryError``, or a kernel killed or crashed by a signal, or dead in a way not known;
    not one that exited with a status of its own, ``os._exit``), ``file`` (a write past the
    file-size cap, as each writer reports it: ``FILE_CAP_ERRORS``)."""
    runs = execution.runs.values()
    hit = set()
    if execution.stopped_status == "timeout" or any(r.status == "timeout" for r in runs):
        hit.add("time")
    if any(r.maybe_memory or r.ename == "MemoryError" for r in runs):
        hit.add("memory")
    if any(FILE_CAP_ERRORS.search(f"{r.ename}: {r.evalue}") for r in runs if r.status == "error"):
        hit.add("file")
    return sorted(hit)


def _raised(before: dict, limits: Limits, names: tuple[str, ...]) -> bool:
    """Whether ``limits`` allows more than ``before`` did in any of ``names`` (0/None: none)."""
    for name in names:
        then, now = before.get(name), getattr(limits, name)
        if then and (not now or now > then):
            return True
    return False


def read_stored(path: Path) -> dict | None:
    """The result stored at ``path``; None when there is none or it cannot be read."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def why_grade(old: dict | None, submission: Submission, lab_sha: str, settings: Settings) -> str:
    """Why ``submission`` is graded now, given its stored result ``old`` (``read_stored``):
    ``""`` when that result holds (kept), ``"limits"`` when it ran out of time, memory or file
    size under limits lower than ``settings.limits``, else ``"new"`` (none stored, or a different
    submission, source, profile or result format, or the grader failed on it)."""
    if not (
        isinstance(old, dict)
        and old.get("version") == RESULT_VERSION
        and not old.get("internal_error")
        and old.get("student") == submission.student
        and old.get("sha256") == submission_sha256(submission)
        and old.get("source_sha256") == lab_sha
        and old.get("profile") == settings.profile
    ):
        return "new"
    hit, before = old.get("limits_hit") or [], old.get("limits") or {}
    if "time" in hit and _raised(before, settings.limits, ("cell_timeout", "notebook_timeout")):
        return "limits"
    if "memory" in hit and _raised(before, settings.limits, ("memory_mb",)):
        return "limits"
    if "file" in hit and _raised(before, settings.limits, ("file_mb",)):
        return "limits"
    return ""


def _worker(submission: Submission, settings: Settings, out: str, notes: list[str]) -> dict:
    """Grade one submission in a worker process and store its result (atomically)."""
    out_path = Path(out)
    path = results_dir(out_path, settings.lab) / f"{safe_name(submission.student)}.json"
    try:
        feedback = feedback_path(out_path, submission.student, settings.lab)
        result = grade_submission(submission, settings, feedback)
        result["feedback"] = feedback.relative_to(out_path).as_posix()
    except Exception as error:  # noqa: BLE001 (a grader bug must not stop the batch)
        result = internal_error_result(submission, settings, f"{type(error).__name__}: {error}")
    result["notes"] = list(notes) + result.get("notes", [])
    write_json_atomic(path, result)
    return result


def internal_error_result(submission: Submission, settings: Settings, why: str) -> dict:
    """A result for a submission the grader itself failed on (regraded on the next run)."""
    lab = settings.course.load(settings.lab)
    rows = [
        _row(q.grade_id, 0.0, q.points, "error", f"the grader failed: {why}") for q in lab.questions
    ]
    digest = submission_sha256(submission) if submission.path.is_file() else sha256(b"")
    result = _result(submission, settings, lab, digest, rows, [f"internal grader error: {why}"])
    result["internal_error"] = True
    return result


def _pool(jobs: int) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["autograder.grade", "autograder.report"])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_follow_grader, initargs=(os.getpid(),)
    )


def _follow_grader(grader: int) -> None:
    """Pool worker initializer: end this worker as soon as the grading process is gone.

    A grader killed without a chance to end its pool (SIGKILL, the OOM killer) left its
    workers grading the submissions already queued and then waiting forever (a worker holds
    its task queue's write end too, so its end never reads as closed), each with its
    templates and their PyTorch. The worker's templates and the kernels forked from them die
    with it (``PR_SET_PDEATHSIG``); its temporary folders are removed by the next ``grade``
    (``forking.sweep_stale``)."""
    try:
        handle = os.pidfd_open(grader)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfds (not Linux, or an old kernel): poll
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable once the process has exited
        else:
            while forking.pid_exists(grader):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="follow-grader", daemon=True).start()


def grade_batch(
    inputs: Iterable[Path | Submission],
    out: Path,
    settings: Settings,
    jobs: int = 1,
    progress: bool = True,
    regrade: bool = False,
    log=print,
    check: bool = True,
) -> BatchReport:
    """Grade every submission found in ``inputs`` (files, folders, zips, or submissions found
    already) into ``out`` (resumable; see module doc). ``check``: refuse a batch that is
    mostly another lab's notebooks (``check_lab``)."""
    from autograder import tables

    out = Path(out)
    inputs = [p if isinstance(p, Submission) else Path(p) for p in inputs]
    lab = settings.course.load(settings.lab)
    lab_sha = lab_fingerprint(lab)
    lock = lock_output(out)
    batch = BatchReport()
    stale = forking.sweep_stale()
    if stale:
        log(f"removed {len(stale)} temporary folder(s) left by a grader that was killed")
    scratch = forking.owned_tempdir("autograder-inputs-")  # swept if this process is killed
    try:
        found = []
        for given in inputs:
            mine = (
                [given] if isinstance(given, Submission) else discover([given], lab.name, scratch)
            )
            if not mine:
                log(f"warning: no notebook found in {given}")
            found += mine
        kept, batch.ignored = one_per_student(
            found, lab.name, settings.course.checkable_labs(), set(lab.by_id)
        )
        for line in batch.ignored:
            log(f"a student with several notebooks: {shown(line)}")
        settings = dataclasses.replace(settings, code_sha256=code_fingerprint(settings.course))
        todo, limited, other_code = [], 0, 0
        for submission in kept:
            path = results_dir(out, lab.name) / f"{safe_name(submission.student)}.json"
            stored = None if regrade else read_stored(path)
            why = why_grade(stored, submission, lab_sha, settings)  # no result stored: "new"
            if why:
                todo.append(submission)
                limited += why == "limits"
            else:
                batch.skipped.append(submission.student)
                other_code += stored.get("code_sha256") != settings.code_sha256
        if check and not _readable_before(out, lab.name, batch.skipped):
            check_lab(todo, lab, settings.course)
        notes = {
            s.student: [line for line in batch.ignored if line.startswith(f"{s.student}: ")]
            for s in todo
        }
        if batch.skipped:
            log(f"{len(batch.skipped)} already graded (kept); {len(todo)} to grade")
        if limited:
            log(
                f"{limited} graded again: they ran out of time, memory or file size under lower "
                "limits than this run's"
            )
        if other_code:
            log(
                f"warning: {other_code} of the kept results were graded before helpers/ or the "
                "grader changed; their grades stand (--regrade grades everyone again)"
            )
        if todo:
            given = [getattr(p, "path", p) for p in inputs]
            hidden = hidden_paths(settings.course, out, [*given, scratch, *settings.hidden])
            settings = dataclasses.replace(settings, hidden=hidden)
            try:
                log(f"isolation of students' kernels: {sandbox.check(SandboxSpec(hidden))}")
            except sandbox.SandboxError as error:
                raise UsageError(str(error)) from error
        if todo and settings.data_seed is None:
            seed = prime_data(settings, out / ".cache", log)
            settings = dataclasses.replace(settings, data_seed=seed)
        bar = _progress(len(todo), progress, lab.name)
        try:
            if jobs <= 1 or len(todo) <= 1:
                for submission in todo:
                    result = _worker(submission, settings, str(out), notes[submission.student])
                    batch.graded.append(submission.student)
                    _advance(bar, result)
            else:
                _run_parallel(todo, settings, out, notes, jobs, batch, bar, log)
        finally:
            if bar is not None:
                bar.close()
            forking.close_all()  # this process's judge templates (workers end theirs on exit)
        batch.results = load_results(out)
        tables.write_csvs(out, batch.results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        lock.close()
    return batch


def lock_output(out: Path):
    """Create ``out`` and hold ``out/.lock`` (``flock``: let go when the file is closed or the
    process dies, however): a second ``grade`` into the same folder stops at once instead of
    grading the same students beside the first. Returns the open lock file."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / ".lock", "a+")  # held until the batch ends
    except OSError as error:
        raise UsageError(f"cannot write to the output folder {out}: {error}") from error
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise UsageError(
            f"another grade or export run ({holder}) is writing to {out}; let it finish, or "
            "stop it (what it graded is kept) and run again"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
    lock.flush()
    return lock


# A worker that dies (the OOM killer, a crash of the grader itself) breaks the whole pool:
# every submission not finished then fails with BrokenProcessPool, not only the one it was
# grading. Those are graded again in a fresh pool, up to this many pools in all; what is
# still unfinished after the last is stored as an internal error (regraded by the next run).
POOL_ATTEMPTS = 2


def _run_parallel(todo, settings, out, notes, jobs, batch, bar, log) -> None:
    for attempt in range(1, POOL_ATTEMPTS + 1):
        last = attempt == POOL_ATTEMPTS
        todo = _run_pool(todo, settings, out, notes, jobs, batch, bar, last)
        if not todo:
            return
        log(
            f"a grading worker died; grading the {len(todo)} unfinished submission(s) again "
            "in new workers"
        )


def _run_pool(todo, settings, out, notes, jobs, batch, bar, last: bool) -> list:
    """Grade ``todo`` in one pool; returns the submissions a broken pool left unfinished
    (none when ``last``: those are stored as internal errors)."""
    pool = _pool(min(jobs, len(todo)))
    unfinished = []
    try:
        futures = {pool.submit(_worker, s, settings, str(out), notes[s.student]): s for s in todo}
        for future in as_completed(futures):
            submission = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool as error:
                if not last:
                    unfinished.append(submission)
                    continue
                why = f"the grading worker process died ({error})"
                result = internal_error_result(submission, settings, why)
                path = results_dir(out, settings.lab) / f"{safe_name(submission.student)}.json"
                write_json_atomic(path, result)
            batch.graded.append(submission.student)
            _advance(bar, result)
    except BaseException:
        # Interrupted (Ctrl-C): stop now; what finished is stored, a rerun does the rest.
        # Workers catch KeyboardInterrupt as a task failure and go on, so end them here;
        # their kernels exit with them (ipykernel watches its parent).
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown(wait=True)
    return unfinished


def _progress(total: int, enabled: bool, lab: str):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"grading {lab}", unit="submission", file=sys.stderr)


def _advance(bar, result: dict) -> None:
    if bar is not None:
        bar.set_postfix_str(
            f"{shown(result['student'])}: {result['score']:g}/{result['max_score']:g}"
        )
        bar.update(1)
