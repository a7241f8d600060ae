"""``python -m autograder``: release, hand out, run, validate, grade and export the labs, gather
the written answers for a person to score, and write a Gradescope autograder.

Exit status: 0 when the command did its job; 1 when a check failed (a refused release, a
committed release out of date, a failing cell in ``run`` or ``validate``); 2 for wrong usage.
``grade`` exits 0 whenever it graded what it could: bad submissions are rows, not failures.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autograder.course import COURSE_ROOT, REPO_ROOT, Course
from autograder.execute import Limits
from autograder.export import FORMATS, VISIBILITIES
from autograder.gradescope import LIMITS as GRADESCOPE_LIMITS
from autograder.notebooks import LabError


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# The least --file-mb: the student's kernel writes each answer to the judge (a returned
# model and the arguments it changed: Lab 1's channel_prune sends two VGGs, 70 MiB under full)
# under the same cap.
MIN_FILE_MB = 256


def _file_mb(text: str) -> int:
    value = int(text)
    if value < MIN_FILE_MB:
        raise argparse.ArgumentTypeError(
            f"at least {MIN_FILE_MB} MiB, got {text}: the student's kernel writes its answers "
            "to the judge (models included) under the same cap"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description=(
            "Release, hand out, run, validate, grade and export the course's nbgrader labs, "
            "and gather written answers for a person to score."
        ),
        epilog="Run `python -m autograder COMMAND --help` for a command's options.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--course",
        type=Path,
        default=COURSE_ROOT,
        metavar="DIR",
        help="nbgrader course root holding source/<lab>/<lab>.ipynb (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    release = commands.add_parser(
        "release",
        parents=[common],
        help="regenerate the student notebooks (<repo>/<lab>.ipynb) from the sources",
        description=(
            "Run nbgrader generate_assignment for each lab (or --lab) and write the student "
            "notebook, outputs cleared and byte-deterministic. By default the release is "
            "refused (exit 1) unless the solution passes every autograded cell and the blank "
            "release fails every one, both run under LAB_PROFILE=smoke."
        ),
    )
    release.add_argument("--lab", help="one lab (default: every lab under source/)")
    release.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="grade the solution and the blank release before writing (default: on)",
    )
    release.add_argument(
        "--check-only",
        action="store_true",
        help="write nothing; exit 1 if the committed release differs from a fresh one",
    )
    release.add_argument(
        "--release-dir",
        type=Path,
        default=REPO_ROOT,
        help="where the student notebooks go (default: %(default)s)",
    )

    handout = commands.add_parser(
        "handout",
        parents=[common],
        help="write what students get (DIR and DIR.zip): notebooks, helpers, no solutions",
        description=(
            "Write the student handout to DIR and DIR.zip: the released notebooks (refused "
            "when one is not a fresh release of its source), the student files (helpers/), the "
            "install files, the data README, the autograder package without the sources (so "
            "that `validate` works) and a README for students (autograder/handout_readme.md). "
            "Every file is searched for the sources' solutions and hidden tests first; a hit "
            "writes nothing (exit 1). Exit 2 when DIR or DIR.zip exists, unless --replace and it is "
            "an earlier handout."
        ),
    )
    handout.add_argument(
        "--out", type=Path, default=Path("handout"), metavar="DIR", help="default: handout"
    )
    handout.add_argument(
        "--replace",
        action="store_true",
        help="replace an earlier handout at DIR and DIR.zip (nothing else is replaced)",
    )
    handout.add_argument(
        "--release-dir",
        type=Path,
        default=REPO_ROOT,
        help="where the student notebooks are (default: %(default)s)",
    )

    run = commands.add_parser(
        "run",
        parents=[common],
        help="execute a lab's solution notebook headless; keep the outputs and figures",
        description=(
            "Execute the source (solution) notebook with LAB_PROFILE set, write the executed "
            "notebook to OUT/<lab>-<profile>.ipynb and its PNG figures under "
            "OUT/<lab>-<profile>_files/, and print the wall time. Stops at the first error "
            "(exit 1)."
        ),
    )
    run.add_argument("--lab", required=True)
    run.add_argument(
        "--profile",
        default=os.environ.get("LAB_PROFILE") or "smoke",
        help="full, quick or smoke (default: $LAB_PROFILE, else smoke)",
    )
    run.add_argument("--out", type=Path, default=REPO_ROOT / "runs", help="default: runs/")
    run.add_argument("--timeout", type=_positive_float, help="seconds per cell (default: none)")

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check your notebook before submitting: which autograded cells pass",
        description=(
            "Run NOTEBOOK as it is (visible checks only; hidden tests run at grading) the way "
            "the grader runs it, and say which autograded cells pass and which fail, and why. "
            "Exit 1 when a cell fails."
        ),
    )
    validate.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    validate.add_argument("--lab", help="default: inferred from the notebook's cells or name")
    validate.add_argument("--profile", default="smoke", help="default: smoke, as in grading")
    validate.add_argument("--no-progress", action="store_true", help="no progress bar")
    _limit_options(validate)

    grade = commands.add_parser(
        "grade",
        parents=[common],
        help="grade submissions into DIR/grades.csv, DIR/totals.csv and DIR/feedback/",
        description=(
            "Grade each SUBMISSION: a notebook file (student = file name without extension), "
            "a folder of them, an nbgrader submitted/ tree (submitted/<student>/<lab>/<lab>"
            ".ipynb) or a zip of those; in a folder, a notebook in a subfolder belongs to the "
            "subfolder directly below (one per student: README). Test and locked cells are restored from the source "
            "(status tampered when changed); each notebook runs in its own kernel under "
            "LAB_PROFILE=smoke with time and memory limits. Results are kept per student in "
            "DIR/.results/, so running the same command again after an interruption grades "
            "only what is missing. A student with several notebooks is graded on one: never "
            "another lab's while there is another, then one that reads and has a cell of the "
            "lab, then the one named <lab>.ipynb, then the newest (README). "
            "DIR/summary/<lab>.html shows the class at a glance (for you: it names students)."
        ),
    )
    grade.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    grade.add_argument(
        "--any-lab",
        action="store_true",
        help="grade even when most notebooks are another lab's (refused otherwise: exit 2)",
    )
    grade.add_argument("--lab", required=True)
    grade.add_argument("--out", type=Path, required=True, metavar="DIR")
    grade.add_argument(
        "--jobs", type=_positive_int, default=1, help="submissions graded in parallel (default 1)"
    )
    grade.add_argument("--profile", default="smoke", help="default: smoke")
    grade.add_argument(
        "--regrade", action="store_true", help="grade again even what DIR/.results already has"
    )
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    _limit_options(grade)

    gradescope = commands.add_parser(
        "gradescope",
        parents=[common],
        help="write a Gradescope autograder zip that grades each submission with this grader",
        description=(
            "Write the zip to upload as a Gradescope programming assignment's autograder: "
            "setup.sh (installs Python 3.11+, PyTorch's CPU build and the course), "
            "run_autograder (grades the submitted notebook as `grade` does and writes "
            "results.json: one test per graded cell) and the course with this lab's source "
            "notebook. The limits default to values that fit Gradescope's default 10-minute "
            "run; raise the assignment's memory in Gradescope (see README). Exit 2 when --out "
            "exists (unless --replace) or the lab is unknown."
        ),
    )
    gradescope.add_argument("--lab", required=True)
    gradescope.add_argument(
        "--out", type=Path, metavar="FILE", help="default: gradescope-<lab>.zip"
    )
    gradescope.add_argument("--replace", action="store_true", help="overwrite --out")
    gradescope.add_argument("--profile", default="smoke", help="default: smoke")
    gradescope.add_argument(
        "--visibility",
        choices=VISIBILITIES,
        default="visible",
        help="when students see the tests and the score (default: visible)",
    )
    gradescope.add_argument(
        "--try",
        dest="tries",
        action="append",
        type=Path,
        default=[],
        metavar="NOTEBOOK",
        help="then run the zip's run_autograder here on NOTEBOOK, as Gradescope would, and "
        "print what the student would see (repeatable; the zip's own code, this Python)",
    )
    _limit_options(gradescope, GRADESCOPE_LIMITS)

    written = commands.add_parser(
        "written",
        parents=[common],
        help="gather the written answers in DIR for a person to score, one page per question",
        description=(
            "For each lab graded into DIR (or --lab): DIR/written/<lab>/<question>.html shows "
            "the question, the reference answer from the source and every student's answer; "
            "DIR/written/<lab>/scores.csv (student,question,max_score,score,comment) is where "
            "a person types the scores (blank answers come scored 0). Run it again after "
            "grading more students: rows already in scores.csv are kept as they are, missing "
            "ones added. `export` then adds the scores to the totals. Exit 2 when DIR holds no "
            "results or scores.csv is not a scores file."
        ),
    )
    written.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="the folder a previous `grade --out DIR` wrote",
    )
    written.add_argument("--lab", help="only this lab (default: every lab graded into DIR)")

    export = commands.add_parser(
        "export",
        help="write the grades in DIR as one gradebook CSV or as Gradescope results.json files",
        description=(
            "Read the results a previous `grade --out DIR` stored in DIR/.results and write "
            "them for a learning management system. --format csv (default) writes one row per "
            "student to DIR/export/grades.csv (or --to FILE) with the columns: student; then, "
            "for each lab in name order, '<lab> total' (score), '<lab> status' (ok, error, "
            "timeout, tampered, unreadable or manual) and one column per graded cell named by "
            "its grade_id ('<lab>/<grade_id>' when several labs are exported) holding its "
            "score; cells are empty where a student has no result for a lab. --format "
            "gradescope writes DIR/export/gradescope/<student>/results.json (or under --to "
            "DIR2) in Gradescope's autograder results format: one test per graded cell, named "
            "like the CSV column, its output the grader's message (never hidden test source), "
            "and a top-level score equal to the sum of the tests. Written answers (status "
            "manual) are included with score 0 and their full max_score, so the maximum "
            "matches totals.csv; their output says that a person grades them. Scores a person "
            "gave the written answers in DIR/written/<lab>/scores.csv (see `written`) are "
            "added, and the score table at the top of each student's feedback page is "
            "rewritten with them. Exit 2 when DIR holds no results or a scores file has a "
            "score that is not one."
        ),
    )
    export.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="the folder a previous `grade --out DIR` wrote",
    )
    export.add_argument("--format", choices=FORMATS, default="csv", help="default: csv")
    export.add_argument("--lab", help="only this lab (default: every lab graded into DIR)")
    export.add_argument(
        "--to",
        type=Path,
        metavar="PATH",
        help="csv: the file (default DIR/export/grades.csv); gradescope: the folder holding "
        "<student>/results.json (default DIR/export/gradescope)",
    )
    export.add_argument(
        "--visibility",
        choices=VISIBILITIES,
        default="visible",
        help="gradescope: when students see the tests and the score (default: visible)",
    )
    return parser


def _limit_options(parser: argparse.ArgumentParser, defaults: Limits = Limits()) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=defaults.cell_timeout,
        metavar="S",
        help="seconds per cell (default: %(default)s)",
    )
    parser.add_argument(
        "--notebook-timeout",
        type=_positive_float,
        default=defaults.notebook_timeout,
        metavar="S",
        help="seconds for the whole notebook (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-mb",
        type=_positive_int,
        default=defaults.memory_mb,
        metavar="M",
        help="address-space cap of the kernel in MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--file-mb",
        type=_file_mb,
        default=defaults.file_mb,
        metavar="M",
        help=f"largest file the student's kernel may write, in MiB, at least {MIN_FILE_MB} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="OMP/MKL/torch threads per kernel (default: CPU cores / jobs; gradescope: 1)",
    )


def _limits(args: argparse.Namespace, jobs: int = 1) -> Limits:
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    return Limits(
        cell_timeout=args.timeout,
        notebook_timeout=args.notebook_timeout,
        memory_mb=args.memory_mb,
        file_mb=args.file_mb,
        threads=threads,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(args)
    course = Course(root=args.course.resolve(), **_course_extras(args))
    try:
        if args.command == "written":
            return _written(args, course)
        if args.command == "release":
            return _release(args, course)
        if args.command == "run":
            return _run(args, course)
        if args.command == "validate":
            return _validate(args, course)
        if args.command == "handout":
            return _handout(args, course)
        if args.command == "gradescope":
            return _gradescope(args, course)
        return _grade(args, course)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _course_extras(args: argparse.Namespace) -> dict:
    if args.command in ("release", "handout"):
        return {"release_dir": args.release_dir.resolve()}
    return {}


def _handout(args: argparse.Namespace, course: Course) -> int:
    from autograder.handout import HandoutError, OutputExists, build
    from autograder.release import ReleaseError

    try:
        made = build(course, args.out, replace=args.replace)
    except (HandoutError, ReleaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, OutputExists) else 1
    size = made.archive.stat().st_size / 2**20
    print(
        f"wrote {made.folder} ({len(made.files)} files) and {made.archive} ({size:.1f} MiB); "
        "no solutions or hidden tests in them (checked). Give students either."
    )
    return 0


def _gradescope(args: argparse.Namespace, course: Course) -> int:
    from autograder.gradescope import BundleError, build, try_locally

    out = args.out or Path(f"gradescope-{args.lab}.zip")
    missing = [str(path) for path in args.tries if not path.is_file()]
    if missing:
        print(f"error: --try: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    limits = _limits(args)
    if args.threads is None:
        limits = dataclasses.replace(limits, threads=GRADESCOPE_LIMITS.threads)
    try:
        made = build(
            course, args.lab, out, limits, args.profile, args.visibility, replace=args.replace
        )
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = ", ".join(f"{name} ({points:g})" for name, points in made.written) or "none"
    print(
        f"wrote {out} ({len(made.files)} files, {out.stat().st_size / 2**20:.1f} MiB). On "
        "Gradescope: a programming assignment; Configure Autograder, upload this zip; set "
        f"Autograder Points to {made.points:g}; add the written answers as manual questions: "
        f"{written}; raise its memory to 3 GB or more (the default 768 MB is too little; README)."
    )
    for path in args.tries:
        print(f"\ntrying {out} on {path} (run_autograder in a scratch /autograder) ...", flush=True)
        value = try_locally(out, {path.name: path.read_bytes()})
        print(_student_view(path, value))
    return 0


def _student_view(path: Path, value: dict) -> str:
    """A Gradescope ``results.json`` as lines: the score, then each test (its output's first
    line). The run's own log, just printed, ends with the result's output."""
    if not value["tests"]:
        return f"{path}: score {value['score']:g}, no tests (the output above says why)"
    points = sum(test.get("max_score", 0) for test in value["tests"])
    lines = [f"{path}: score {value['score']:g} / {points:g}, test by test:"]
    for test in value["tests"]:
        first = (test.get("output") or "").strip().splitlines()[:1]
        lines.append(
            f"  {test['name']}: {test['score']:g} / {test['max_score']:g}"
            + (f"  {first[0]}" if first else "")
        )
    return "\n".join(lines)


def _release(args: argparse.Namespace, course: Course) -> int:
    from autograder.release import ReleaseError, check, committed_matches, generate

    labs = [args.lab] if args.lab else course.labs()
    if not labs:
        print(f"error: no labs under {course.root / 'source'}", file=sys.stderr)
        return 2
    for lab in labs:
        course.load(lab)
    status = 0
    for lab in labs:
        try:
            if args.check_only:
                same, _ = committed_matches(course, lab)
                path = course.release_path(lab)
                if same:
                    print(f"{lab}: {path} is up to date")
                else:
                    print(f"{lab}: {path} differs from a fresh release; run `make release`")
                    status = 1
                continue
            text = generate(course, lab)
            if args.check:
                print(f"{lab}: grading the solution and the blank release (smoke)...", flush=True)
                found = check(course, lab, text)
                if not found.ok:
                    print(found.describe(), file=sys.stderr)
                    print(f"{lab}: release refused; nothing written", file=sys.stderr)
                    status = 1
                    continue
                print(f"{lab}: check passed ({found.seconds:.0f} s per notebook)")
            path = course.release_path(lab)
            path.parent.mkdir(parents=True, exist_ok=True)
            old = path.read_text(encoding="utf-8") if path.is_file() else None
            path.write_text(text, encoding="utf-8")
            print(f"{lab}: wrote {path}" + (" (unchanged)" if old == text else ""))
        except ReleaseError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
    return status


def _run(args: argparse.Namespace, course: Course) -> int:
    from autograder.run import run_lab

    report = run_lab(course, args.lab, args.profile, args.out, cell_timeout=args.timeout)
    print(
        f"{args.lab} ({args.profile}): {report.seconds:.1f} s wall time, {report.cells} code "
        f"cells; wrote {report.notebook} and {len(report.figures)} figures"
    )
    if report.failed is not None:
        print(f"cell {report.failed} failed:\n{report.failure}", file=sys.stderr)
        return 1
    return 0


def _validate(args: argparse.Namespace, course: Course) -> int:
    from autograder.validate import validate

    if not args.notebook.is_file():
        print(f"error: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    result = validate(args.notebook, course, args.lab, _limits(args), args.profile, progress)
    print("\n".join(result.lines))
    return 0 if result.passed else 1


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Within: SIGTERM (``kill``, ``timeout``) and SIGHUP raise KeyboardInterrupt in the main
    thread, so that they stop a batch as Ctrl-C does (workers and kernels ended, results
    kept); the list yielded gets the signal's number. A second one kills at once; one that
    is ignored (``nohup``) stays ignored. Off the main thread it changes nothing."""
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if number is not None and signal.getsignal(number) is signal.SIG_DFL:
                previous[number] = signal.signal(number, stop)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _grade(args: argparse.Namespace, course: Course) -> int:
    from autograder.export import refresh_pages
    from autograder.grade import Settings, UsageError, grade_batch, shown
    from autograder.summary import gather, headline, summary_path
    from autograder.written import WrittenError, scores_path, with_hand_scores

    settings = Settings(
        course=course, lab=args.lab, limits=_limits(args, args.jobs), profile=args.profile
    )
    course.load(args.lab)
    with stop_on_signals() as received:
        try:
            batch = grade_batch(
                args.submissions,
                args.out,
                settings,
                jobs=args.jobs,
                progress=not args.no_progress,
                regrade=args.regrade,
                check=not args.any_lab,
            )
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:  # a file grading needs cannot be written: a full disk, say
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            print(
                f"error: grading stopped: {error.strerror or error} ({error.filename or args.out}); "
                f"the students graded so far are kept in {args.out / '.results'}: "
                f"{'make room' if full else 'fix that'} and run the same command again to finish",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            what = f"stopped by {signal.Signals(received[0]).name}" if received else "interrupted"
            print(
                f"\n{what}: the students graded so far are kept in "
                f"{args.out / '.results'}; run the same command again to finish",
                file=sys.stderr,
            )
            return 128 + (received[0] if received else signal.SIGINT)
    results = [r for r in batch.results if r["lab"] == args.lab]
    counts = Counter(r["status"] for r in results)
    summary = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
    print(
        f"graded {len(batch.graded)}, kept {len(batch.skipped)} graded before, ignored "
        f"{len(batch.ignored)} other notebooks of graded students; totals by status: "
        f"{summary or 'none'}"
    )
    print(f"wrote {args.out / 'grades.csv'}, {args.out / 'totals.csv'}, {args.out / 'feedback'}/")
    failed = sorted(r["student"] for r in results if r.get("internal_error"))
    scored = scores_path(args.out, args.lab).exists()
    if scored:  # a person scored written answers already: keep them on the pages
        try:
            results = with_hand_scores(args.out, results, strict=False)
        except WrittenError as error:
            scored = False
            print(f"warning: the written answers' scores are left out of the pages: {error}")
    try:
        refresh_pages(args.out, results, feedback=scored)
        print(f"class summary: {summary_path(args.out, args.lab)} ", end="")
    except OSError as error:  # the grades are written: say so, and go on
        print(f"warning: the class summary could not be written ({error}) ", end="")
    print(f"({headline(gather(args.lab, results))})")
    if failed:
        print(
            f"the grader itself failed on {len(failed)} student(s), stored with 0 points: "
            f"{', '.join(map(shown, failed[:10]))}{' ...' if len(failed) > 10 else ''}; run the same "
            "command again to grade them again (see 'internal grader error' in their notes)"
        )
    return 0


def _written(args: argparse.Namespace, course: Course) -> int:
    from autograder.export import NoResults, select_results
    from autograder.written import WrittenError, write_pages

    try:
        done = write_pages(args.out, course, select_results(args.out, args.lab))
    except (NoResults, WrittenError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not done:
        print("no written answers to score in these labs")
    for lab, path, added, rescore in done:
        print(
            f"{lab}: pages in {path.parent}/ (index.html); scores to fill in {path} "
            f"({added} rows added)"
        )
        if rescore:
            print(
                f"{lab}: {len(rescore)} answer(s) changed since they were scored, their scores "
                f"put back to waiting (the old one in the comment): {', '.join(rescore[:10])}"
                f"{' ...' if len(rescore) > 10 else ''}"
            )
    return 0


def _export(args: argparse.Namespace) -> int:
    from autograder.export import NoResults, export
    from autograder.grade import UsageError, shown
    from autograder.written import WrittenError

    try:
        written, no_page = export(
            args.out, args.format, lab=args.lab, to=args.to, visibility=args.visibility
        )
    except (NoResults, WrittenError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file in the way of a folder, a read-only folder
        print(f"error: cannot write the export: {error}", file=sys.stderr)
        return 2
    if args.format == "csv":
        print(f"wrote {written[0]}")
    else:
        print(f"wrote {len(written)} results.json under {written[0].parent.parent}/")
    print(
        f"feedback pages under {args.out / 'feedback'}/ and class summaries under "
        f"{args.out / 'summary'}/: brought up to date"
    )
    if no_page:
        print(
            f"no feedback page to bring up to date for {len(no_page)} "
            f"student{'s' if len(no_page) != 1 else ''}: "
            f"{', '.join(map(shown, no_page[:10]))}{' ...' if len(no_page) > 10 else ''}"
        )
    return 0
