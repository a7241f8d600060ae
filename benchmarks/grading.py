"""Grading speed: ``python -m autograder grade`` against plain ``nbgrader autograde``.

For each lab, ``--submissions N`` notebooks are made from the lab's source, cycling through
the solution itself, the blank student release (``<lab>.ipynb``) and the solution with one
common mistake each (``tests/<lab>_mistakes.py``, applied as ``tests/test_lab_roundtrip.py``
does). They are graded

1. by ``python -m autograder grade --lab LAB DIR --out OUT --jobs J`` for each J of
   ``--jobs-list`` (default limits, ``smoke`` profile; the kernel threads are the grader's
   default, CPU cores / J);
2. by ``nbgrader autograde LAB --force`` in a temporary nbgrader course (the lab's source
   released with ``nbgrader generate_assignment``, each submission in
   ``submitted/<student>/<lab>/<lab>.ipynb``) under ``LAB_PROFILE=smoke``, with the same
   kernel environment where it matters (threads, ``MPLBACKEND=Agg``, CPU only). nbgrader
   grades one notebook at a time, so for J > 1 the submissions are split over J course
   copies graded by J concurrent processes.

The lab's set-up cells are run once before the timed runs (``autograder.grade.prime_data``,
timed and printed as "priming"); both graders start from that data: ours finds it in
``OUT/.cache``, nbgrader gets one shared copy as ``LAB_DATA`` (nbgrader gives submissions
no private data folder). Batch walls therefore exclude priming; the 50-submission estimate
adds it back.

Seconds per submission: ours from each result's ``seconds`` (restore, kernel, cells,
feedback), nbgrader from its log's timestamps (first to last line naming the student), both
medians. Timing is of whole processes with ``time.perf_counter``; numbers from a shared or
loaded machine are only comparable within one run, hence the load averages.

    .venv/bin/python benchmarks/grading.py                           # 6 per lab, jobs 1 and 2
    .venv/bin/python benchmarks/grading.py --labs lab1_pruning --submissions 50 --jobs-list 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

from autograder.course import Course  # noqa: E402
from autograder.execute import Limits  # noqa: E402

LABS = ("lab1_pruning", "lab3_quant_prune")
GOAL_RATIO = 1.5  # at most this many times nbgrader's seconds per submission
GOAL_BATCH = ("lab1_pruning", 50, 10.0)  # lab, submissions, minutes
_LOG_TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) ")


@dataclass
class Run:
    """One timed grading command (or J concurrent ones) over a lab's submissions."""

    grader: str  # "autograder" or "nbgrader"
    jobs: int
    wall_s: float
    per_submission_s: dict[str, float] = field(default_factory=dict)
    scores: dict[str, str] = field(default_factory=dict)  # student -> "score/max status"
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median_s(self) -> float | None:
        values = list(self.per_submission_s.values())
        return statistics.median(values) if values else None

    def per_minute(self, count: int) -> float:
        return 60.0 * count / self.wall_s if self.wall_s else float("nan")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- submissions


def mistakes_path(lab: str) -> Path:
    """The file listing ``lab``'s common mistakes: ``tests/lab1_mistakes.py`` for lab1_pruning."""
    return REPO_ROOT / "tests" / f"{lab.split('_')[0]}_mistakes.py"


def load_mistakes(lab: str) -> list[dict]:
    path = mistakes_path(lab)
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MISTAKES)


def with_mistake(notebook: nbformat.NotebookNode, mistake: dict) -> nbformat.NotebookNode:
    """``notebook`` with ``mistake["old"]`` replaced by ``mistake["new"]`` in its cell (and
    so for each of its ``more`` substitutions)."""
    for change in (mistake, *mistake.get("more", ())):
        (cell,) = [
            c
            for c in notebook.cells
            if c.metadata.get("nbgrader", {}).get("grade_id") == change["grade_id"]
        ]
        if cell.source.count(change["old"]) != 1:
            raise ValueError(f"mistake {mistake['name']}: its `old` text is not in the cell once")
        cell.source = cell.source.replace(change["old"], change["new"])
    return notebook


def make_submissions(course: Course, lab: str, count: int, folder: Path) -> dict[str, str]:
    """Write ``count`` notebooks ``<student>.ipynb`` into ``folder``; returns student -> kind."""
    source = course.source_path(lab)
    kinds: list[tuple[str, bytes]] = [("solution", source.read_bytes())]
    release = course.release_path(lab)
    if release.is_file():
        kinds.append(("blank", release.read_bytes()))
    for mistake in load_mistakes(lab):
        notebook = with_mistake(nbformat.read(source, as_version=4), mistake)
        kinds.append((mistake["name"], nbformat.writes(notebook).encode()))
    folder.mkdir(parents=True, exist_ok=True)
    students = {}
    for index in range(count):
        kind, data = kinds[index % len(kinds)]
        student = f"s{index:03d}_{kind}"
        (folder / f"{student}.ipynb").write_bytes(data)
        students[student] = kind
    return students


# --------------------------------------------------------------------------- our grader


def prime(course: Course, lab: str, limits: Limits, cache: Path) -> tuple[Path | None, float]:
    """Run the lab's set-up cells once into ``cache``; returns (seed data folder, seconds)."""
    from autograder.grade import Settings, prime_data

    began = time.perf_counter()
    seed = prime_data(Settings(course=course, lab=lab, limits=limits), cache, log=log)
    return seed, time.perf_counter() - began


def run_ours(lab: str, submissions: Path, out: Path, jobs: int, args, cache: Path) -> Run:
    if cache.is_dir():
        shutil.copytree(cache, out / ".cache")
    primed_before = set(os.listdir(out / ".cache")) if (out / ".cache").is_dir() else set()
    command = [sys.executable, "-m", "autograder", "grade", "--lab", lab, str(submissions)]
    command += ["--out", str(out), "--jobs", str(jobs), "--no-progress"]
    if args.timeout:
        command += ["--timeout", str(args.timeout)]
    log(f"{lab}: autograder --jobs {jobs}: {len(os.listdir(submissions))} submissions ...")
    wall, returncode = _timed(command, out / "grade.log")
    run = Run("autograder", jobs, wall, commands=[shlex.join(command)])
    if returncode:
        run.notes.append(f"exit status {returncode}: see {out / 'grade.log'}")
    primed_after = set(os.listdir(out / ".cache")) if (out / ".cache").is_dir() else set()
    if primed_after - primed_before:
        run.notes.append("the grade command primed the data itself: its wall includes that")
    for path in sorted((out / ".results" / lab).glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        student = result.get("student", path.stem)
        run.per_submission_s[student] = float(result.get("seconds", float("nan")))
        run.scores[student] = (
            f"{result.get('score', 0):g}/{result.get('max_score', 0):g} {result.get('status')}"
        )
    log(f"{lab}: autograder --jobs {jobs}: {wall:.1f} s")
    return run


# --------------------------------------------------------------------------- nbgrader


def nbgrader_env(seed: Path | None, data: Path, threads: int) -> dict[str, str]:
    """The environment of plain nbgrader's kernels: smoke, CPU only, the grader's threads."""
    env = dict(os.environ)
    env.pop("NBGRADER_EXECUTION", None)  # nbgrader sets it itself
    if seed is not None and seed.is_dir() and not data.exists():
        shutil.copytree(seed, data)
    data.mkdir(parents=True, exist_ok=True)
    threads_text = str(threads)
    env.update(
        {
            "LAB_PROFILE": "smoke",
            "LAB_DATA": str(data),
            "LAB_DEVICE": "cpu",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            # nbgrader runs `alembic` and finds the kernel's Python on PATH
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "MPLBACKEND": "Agg",
            "TQDM_DISABLE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "OMP_NUM_THREADS": threads_text,
            "MKL_NUM_THREADS": threads_text,
            "OPENBLAS_NUM_THREADS": threads_text,
            "NUMEXPR_NUM_THREADS": threads_text,
            "TORCH_NUM_THREADS": threads_text,
        }
    )
    return env


def nbgrader_course(course: Course, lab: str, root: Path, notebooks: list[Path], env) -> None:
    """An nbgrader course at ``root``: the lab released into a gradebook, submissions in."""
    (root / "source" / lab).mkdir(parents=True)
    shutil.copy2(course.source_path(lab), root / "source" / lab / f"{lab}.ipynb")
    shutil.copy2(course.config_file, root / "nbgrader_config.py")
    command = [sys.executable, "-m", "nbgrader", "generate_assignment", lab, "--force"]
    with open(root / "generate.log", "wb") as stream:
        subprocess.run(command, cwd=root, env=env, stdout=stream, stderr=stream, check=True)
    for notebook in notebooks:
        folder = root / "submitted" / notebook.stem / lab
        folder.mkdir(parents=True)
        shutil.copy2(notebook, folder / f"{lab}.ipynb")


def run_nbgrader(
    course: Course, lab: str, notebooks: list[Path], work: Path, jobs: int, seed, args
) -> Run:
    """``nbgrader autograde`` over ``notebooks``, split over ``jobs`` concurrent courses."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = nbgrader_env(seed, work / "lab_data", threads)
    parts = [notebooks[i::jobs] for i in range(jobs)]
    roots = []
    for index, part in enumerate(p for p in parts if p):
        root = work / f"course{index}"
        nbgrader_course(course, lab, root, part, env)
        roots.append(root)
    command = [sys.executable, "-m", "nbgrader", "autograde", lab, "--force"]
    command += ["--Application.log_level=INFO", "--Application.log_datefmt=%H:%M:%S"]
    command += ["--Application.log_format=%(asctime)s.%(msecs)03d %(levelname)s %(message)s"]
    if args.timeout:
        command += [f"--Execute.timeout={int(args.timeout)}"]
    log(f"{lab}: nbgrader x{len(roots)}: {len(notebooks)} submissions ...")
    began = time.perf_counter()
    processes = []
    try:
        for root in roots:
            stream = open(root / "autograde.log", "wb")  # noqa: SIM115 (closed below)
            processes.append(
                (subprocess.Popen(command, cwd=root, env=env, stdout=stream, stderr=stream), stream)
            )
        for process, _ in processes:
            process.wait()
    finally:  # interrupted: stop what this benchmark started
        for process, stream in processes:
            if process.poll() is None:
                process.terminate()
            stream.close()
    wall = time.perf_counter() - began
    run = Run("nbgrader", jobs, wall)
    run.commands = [f"cd {root} && {shlex.join(command)}" for root in roots]
    failed = [
        str(root) for (process, _), root in zip(processes, roots, strict=True) if process.returncode
    ]
    if failed:
        run.notes.append(f"nbgrader autograde exited non-zero in {', '.join(failed)}")
    for root in roots:
        students = [p.stem for p in notebooks if (root / "submitted" / p.stem).is_dir()]
        run.per_submission_s.update(_log_spans(root / "autograde.log", students))
        run.scores.update(_nbgrader_scores(root, lab, students))
    log(f"{lab}: nbgrader x{len(roots)}: {wall:.1f} s")
    return run


def _log_spans(path: Path, students: list[str]) -> dict[str, float]:
    """Seconds from the first to the last log line naming each student (their paths)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    previous = None
    for line in path.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if not match:
            continue
        clock = datetime.strptime(match.group(1), "%H:%M:%S.%f")
        seconds = clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6
        if previous is not None and seconds < previous:  # past midnight
            seconds += 86400
        previous = seconds
        for student in students:
            if f"/{student}/" in line or f"'{student}'" in line:
                first.setdefault(student, seconds)
                last[student] = seconds
    return {s: last[s] - first[s] for s in first}


def _nbgrader_scores(root: Path, lab: str, students: list[str]) -> dict[str, str]:
    try:
        from nbgrader.api import Gradebook, MissingEntry
    except ImportError:
        return {}
    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(lab, student)
            except MissingEntry:
                scores[student] = "not graded"
                continue
            scores[student] = f"{submission.score:g}/{submission.max_score:g}"
    return scores


# --------------------------------------------------------------------------- report


def _timed(command: list[str], log_path: Path) -> tuple[float, int]:
    """Wall seconds and exit status of ``command`` run from the repository root."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with open(log_path, "wb") as stream:
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=stream, stderr=stream, check=False)
    return time.perf_counter() - began, done.returncode


def machine() -> list[str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("torch", "nbgrader", "nbclient", "ipykernel"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return [
        f"CPU: {model}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}; " + ", ".join(versions),
    ]


def load_text() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(lab: str, students: dict[str, str], runs: list[Run], prime_s: float) -> list[str]:
    count = len(students)
    kinds = Counter(students.values())
    lines = [
        f"== {lab}: {count} submissions ("
        + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        + f"); priming (set-up cells, once): {prime_s:.1f} s",
        f"{'grader':<12} {'jobs':>4} {'batch wall s':>13} {'per minute':>11} "
        f"{'s/submission':>13}  (median; min-max)",
    ]
    for run in runs:
        values = list(run.per_submission_s.values())
        spread = f"{min(values):.1f}-{max(values):.1f}" if values else "-"
        lines.append(
            f"{run.grader:<12} {run.jobs:>4} {run.wall_s:>13.1f} {run.per_minute(count):>11.2f} "
            f"{_fmt(run.median_s):>13}  ({spread}; {len(values)} timed)"
        )
        lines += [f"  note: {note}" for note in run.notes]
    ours = {run.jobs: run for run in runs if run.grader == "autograder"}
    plain = {run.jobs: run for run in runs if run.grader == "nbgrader"}
    for jobs in sorted(ours.keys() & plain.keys()):
        mine, theirs = ours[jobs].median_s, plain[jobs].median_s
        if mine and theirs:
            ratio = mine / theirs
            verdict = "yes" if ratio <= GOAL_RATIO else "NO"
            lines.append(
                f"ours / nbgrader per submission, jobs {jobs}: {ratio:.2f}x "
                f"(goal <= {GOAL_RATIO}x: {verdict})"
            )
    goal_lab, goal_count, goal_minutes = GOAL_BATCH
    if lab == goal_lab and ours:
        jobs = max(ours)
        run = ours[jobs]
        if count >= goal_count:
            minutes = (run.wall_s + prime_s) / 60 * goal_count / count
            how = (
                f"measured on {count} (scaled to {goal_count})"
                if count > goal_count
                else "measured"
            )
        else:
            minutes = (prime_s + goal_count * run.wall_s / count) / 60
            how = (
                f"extrapolated from {count}; an upper bound, since each worker's first "
                "submission also starts the kernel templates"
            )
        verdict = "yes" if minutes < goal_minutes else "NO"
        lines.append(
            f"{goal_count} {lab} submissions with --jobs {jobs}, priming included: "
            f"{minutes:.1f} min, {how} (goal < {goal_minutes:g} min: {verdict})"
        )
    lines.append(
        "raw, per student (s<index>_<kind>): seconds and score by grader (written answers "
        "score 0 until a person grades them)"
    )
    for student in students:
        cells = []
        for run in runs:
            seconds = run.per_submission_s.get(student)
            cells.append(
                f"{run.grader[:4]}-j{run.jobs} {_fmt(seconds)} s {run.scores.get(student, '?')}"
            )
        lines.append(f"  {student:<40} " + " | ".join(cells))
    for run in runs:
        lines += [f"command ({run.grader}, jobs {run.jobs}): {c}" for c in run.commands]
    return lines


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--labs", nargs="+", default=list(LABS), metavar="LAB", help="default: both"
    )
    parser.add_argument(
        "--submissions", type=int, default=6, metavar="N", help="notebooks per lab (default 6)"
    )
    parser.add_argument(
        "--jobs-list", nargs="+", type=int, default=[1, 2], metavar="J", help="default: 1 2"
    )
    parser.add_argument("--skip-nbgrader", action="store_true", help="time our grader only")
    parser.add_argument("--out", type=Path, help="keep submissions, outputs and logs here")
    parser.add_argument("--timeout", type=float, help="seconds per cell, for both graders")
    args = parser.parse_args(argv)
    if args.submissions < 1 or any(j < 1 for j in args.jobs_list):
        parser.error("--submissions and --jobs-list need positive numbers")
    course = Course()
    for lab in args.labs:
        course.load(lab)  # a clear error for an unknown lab

    started = time.perf_counter()
    load_start = load_text()
    work = Path(tempfile.mkdtemp(prefix="grading-bench-")) if args.out is None else args.out
    work.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    try:
        limits = Limits() if not args.timeout else Limits(cell_timeout=args.timeout)
        for lab in args.labs:
            folder = work / lab
            if folder.exists():
                shutil.rmtree(folder)
            students = make_submissions(course, lab, args.submissions, folder / "submissions")
            log(f"{lab}: priming the set-up cells once ...")
            seed, prime_s = prime(course, lab, limits, folder / "prime" / ".cache")
            log(f"{lab}: primed in {prime_s:.1f} s ({seed or 'no seed: set-up failed'})")
            runs = []
            notebooks = sorted((folder / "submissions").glob("*.ipynb"))
            # Each pair (ours, nbgrader) at one jobs value runs back to back, so that a change
            # in the machine's load between the pairs does not tilt the ratio.
            for jobs in args.jobs_list:
                out = folder / f"autograder-j{jobs}"
                cache = folder / "prime" / ".cache"
                runs.append(run_ours(lab, folder / "submissions", out, jobs, args, cache))
                if not args.skip_nbgrader:
                    where = folder / f"nbgrader-j{jobs}"
                    runs.append(run_nbgrader(course, lab, notebooks, where, jobs, seed, args))
            runs.sort(key=lambda run: (run.grader, run.jobs))
            lines += report(lab, students, runs, prime_s)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    header = [
        "Grading benchmark (smoke profile, default grading limits)",
        *machine(),
        f"load average (1, 5, 15 min): start {load_start}, end {load_text()}",
        f"command: {shlex.join([sys.executable, *sys.argv])}",
        f"total {time.perf_counter() - started:.0f} s"
        + (f"; outputs kept in {work}" if args.out else ""),
    ]
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
