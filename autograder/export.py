"""Grades for a learning management system, from the results ``grade`` stored in ``DIR``.

``export`` reads ``DIR/.results/<lab>/<student>.json`` (what ``grade --out DIR`` keeps; see
``autograder.grade.load_results``) and writes one of two formats:

- ``csv``: one row per student, for a gradebook import. Columns: ``student``; then, for each
  lab in name order, ``<lab> total`` (the student's score), ``<lab> status`` (the
  submission's status) and one column per graded cell, named by its ``grade_id``
  (``<lab>/<grade_id>`` when several labs are exported), holding its score. A cell is empty
  where a student has no result for that lab.
- ``gradescope``: one ``<student>/results.json`` per student in Gradescope's autograder
  results format: each graded cell is one test (same name as the CSV column) whose output is
  the row's message; the top-level ``score`` is the sum of the tests' scores. Written answers
  (status ``manual``) are included with score 0 and their full ``max_score``, so that the
  maximum matches ``totals.csv``; their output says a person grades them.

Both formats add the scores a person gave the written answers in
``DIR/written/<lab>/scores.csv`` (``python -m autograder written``; see
``autograder.written``): such a cell scores as given, with status ``ok``, and the totals
follow. ``grades.csv`` and ``totals.csv`` in DIR itself keep them at 0. The score table at
the top of each student's feedback page (``DIR/feedback/<student>/<lab>.html``) is rewritten
with the same scores and comments, so the pages handed back to students show them too, and
so is the class summary (``DIR/summary/<lab>.html``, ``autograder.summary``).

The stored messages never show hidden test source, so they are exported as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from autograder.grade import STATUS_ORDER, feedback_path, load_results, lock_output, safe_name
from autograder.tables import csv_text, number, write_text_atomic

FORMATS = ("csv", "gradescope")
# Gradescope's visibility settings, for tests and for the whole result.
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
MANUAL_OUTPUT = "graded by hand: this test shows 0 until a person grades the written answer"


class NoResults(ValueError):
    """``DIR`` holds no stored results (or none for the lab asked for)."""


def select_results(out: Path, lab: str | None = None) -> list[dict]:
    """The stored results under ``out`` (only ``lab``'s when given); ``NoResults`` if none."""
    results = load_results(Path(out))
    if not results:
        raise NoResults(
            f"no grading results in {Path(out) / '.results'}: is {out} the folder "
            "`grade --out DIR` wrote?"
        )
    if lab is None:
        return results
    chosen = [r for r in results if r["lab"] == lab]
    if not chosen:
        labs = ", ".join(sorted({r["lab"] for r in results}))
        raise NoResults(f"no results for lab {lab!r} in {Path(out) / '.results'} (labs: {labs})")
    return chosen


def question_name(lab: str, question: str, several_labs: bool) -> str:
    """A graded cell's name in an export: its grade_id, prefixed by the lab when needed."""
    return f"{lab}/{question}" if several_labs else question


def _questions(results: list[dict]) -> dict[str, list[str]]:
    """Each lab's grade_ids in notebook order (the union over students, first seen first)."""
    order: dict[str, list[str]] = {}
    for result in results:
        known = order.setdefault(result["lab"], [])
        for row in result["rows"]:
            if row["question"] not in known:
                known.append(row["question"])
    return dict(sorted(order.items()))


def csv_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The wide table: a header and one row per student (see the module doc)."""
    questions = _questions(results)
    several = len(questions) > 1
    header = ["student"]
    for lab, names in questions.items():
        header += [f"{lab} total", f"{lab} status"]
        header += [question_name(lab, q, several) for q in names]
    by_student: dict[str, dict[str, dict]] = {}
    for result in results:
        by_student.setdefault(result["student"], {})[result["lab"]] = result
    rows = []
    for student in sorted(by_student):
        line = [student]
        for lab, names in questions.items():
            result = by_student[student].get(lab)
            if result is None:
                line += [""] * (2 + len(names))
                continue
            scores = {row["question"]: number(row["score"]) for row in result["rows"]}
            line += [number(result["score"]), result["status"]]
            line += [scores.get(q, "") for q in names]
        rows.append(line)
    return header, rows


def gradescope_result(
    results: list[dict], several_labs: bool, visibility: str, written: bool = True
) -> dict:
    """One student's ``results.json`` from their results (one per lab). ``written``: include
    the written answers as tests scoring 0 (``export``); without (the Gradescope autograder,
    where they are graded as Gradescope's own manual questions) the output names them."""
    tests, summary = [], []
    for result in sorted(results, key=lambda r: r["lab"]):
        rows = [row for row in result["rows"] if written or row["status"] != "manual"]
        score, points, status = result["score"], result["max_score"], result["status"]
        if not written:
            score = sum(float(row["score"]) for row in rows)
            points = sum(float(row["max_score"]) for row in rows)
            status = min((row["status"] for row in rows), key=STATUS_ORDER.index, default="ok")
        summary.append(
            f"{result['lab']}: {number(score)} / {number(points)} "
            f"(status {status}, graded {result['graded_at']})"
        )
        by_hand = [row for row in result["rows"] if row not in rows]
        if by_hand:
            names = ", ".join(f"{row['question']} ({number(row['max_score'])})" for row in by_hand)
            summary.append(f"Written answers, graded by hand on Gradescope: {names}.")
        summary += result.get("notes", [])
        for row in rows:
            manual = row["status"] == "manual"
            tests.append(
                {
                    "name": question_name(result["lab"], row["question"], several_labs),
                    "score": float(row["score"]),
                    "max_score": float(row["max_score"]),
                    "output": f"{row['message']}; {MANUAL_OUTPUT}" if manual else row["message"],
                    "visibility": visibility,
                }
            )
    return {
        "score": sum(test["score"] for test in tests),
        "execution_time": round(sum(float(r.get("seconds", 0.0)) for r in results)),
        "output": "\n".join(summary),
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def refresh_feedback(out: Path, results: list[dict]) -> list[str]:
    """Rewrite the score table of each result's feedback page with the result (as
    ``with_hand_scores`` made it); returns "student (lab)" for each page missing or without
    a table (left as they are)."""
    from autograder.report import refresh_summary

    missing = []
    for result in results:
        if not refresh_summary(feedback_path(Path(out), result["student"], result["lab"]), result):
            missing.append(f"{result['student']} ({result['lab']})")
    return missing


def export(
    out: Path,
    fmt: str = "csv",
    lab: str | None = None,
    to: Path | None = None,
    visibility: str = "visible",
) -> tuple[list[Path], list[str]]:
    """Write the export of ``out``'s results and refresh the feedback pages' score tables;
    returns the files written and the students whose feedback page was not found.

    Args:
        out: the folder ``grade --out`` wrote.
        fmt: ``csv`` or ``gradescope`` (see the module doc).
        lab: export only this lab (default: every lab there).
        to: the CSV file (default ``out/export/grades.csv``) or the folder holding one
            ``<student>/results.json`` each (default ``out/export/gradescope``).
        visibility: Gradescope visibility of the tests and the result.

    Raises:
        NoResults: ``out`` holds no results (for ``lab``).
        WrittenError: a scores file of written answers (``autograder.written``) has a score
            that is not one; nothing is written then.
        UsageError: a ``grade`` run is writing to ``out`` (its lock is held).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if visibility not in VISIBILITIES:
        raise ValueError(f"unknown visibility {visibility!r}")
    from autograder.written import with_hand_scores

    if not (Path(out) / ".results").is_dir():
        select_results(out, lab)  # raises NoResults, naming the folder (nothing created)
    lock = lock_output(Path(out))  # a grade run rewrites feedback pages too: not meanwhile
    try:
        results = with_hand_scores(out, select_results(out, lab))
        files = _write(out, fmt, results, to, visibility)
        return files, refresh_pages(out, results)
    finally:
        lock.close()


def refresh_pages(out: Path, results: list[dict], feedback: bool = True) -> list[str]:
    """Write the class summary of each lab of ``results`` and, with ``feedback``, rewrite
    the score table of each result's feedback page (``refresh_feedback``); returns the
    students whose page was not found. ``export`` and ``grade`` (once a scores file exists)
    call it with the hand scores added, so that what students and the instructor see agree."""
    from autograder.summary import write_summaries

    write_summaries(out, results)
    return refresh_feedback(out, results) if feedback else []


def _write(
    out: Path, fmt: str, results: list[dict], to: Path | None, visibility: str
) -> list[Path]:
    if fmt == "csv":
        path = Path(to) if to is not None else Path(out) / "export" / "grades.csv"
        write_text_atomic(path, csv_text(*csv_table(results)))
        return [path]
    folder = Path(to) if to is not None else Path(out) / "export" / "gradescope"
    several = len({r["lab"] for r in results}) > 1
    by_student: dict[str, list[dict]] = {}
    for result in results:
        by_student.setdefault(result["student"], []).append(result)
    written = []
    for student in sorted(by_student):
        path = folder / safe_name(student) / "results.json"
        value = gradescope_result(by_student[student], several, visibility)
        write_text_atomic(path, json.dumps(value, indent=1) + "\n")
        written.append(path)
    return written
