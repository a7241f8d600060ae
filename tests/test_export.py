"""Does `python -m autograder export` turn a graded folder into a gradebook CSV and Gradescope
results that agree with grades.csv?

Three toy submissions (tests/fixtures/toy) are graded once with ``grade_batch``; a second lab
is made from those real results (same JSON layout, other lab name and scores) so that the
exports of two labs, and of a student missing one lab, are checked too. Expected values are
always derived from grades.csv and totals.csv, never typed in.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from toy import TOY_LIMITS, TOY_ROOT, answered, read_csv, with_solution

from autograder import cli
from autograder.course import Course
from autograder.export import VISIBILITIES
from autograder.grade import Settings, grade_batch, load_results, results_dir, write_json_atomic
from autograder.tables import write_csvs

LIMITS = TOY_LIMITS
OTHER_LAB = "toy_copy"  # the second lab, derived from the toy's real results
ABSENT = "empty"  # the student who has no result for the second lab

pytestmark = pytest.mark.timeout(300)


def derived_result(result: dict) -> dict:
    """A result of OTHER_LAB made from a real one: renamed questions, other (half) scores."""
    other = copy.deepcopy(result)
    other["lab"] = OTHER_LAB
    for row in other["rows"]:
        row["question"] = row["question"].replace("toy_", f"{OTHER_LAB}_", 1)
        if row["status"] != "manual":
            row["score"] = row["max_score"] / 2
    other["score"] = sum(row["score"] for row in other["rows"])
    return other


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """A graded folder: three toy submissions, plus OTHER_LAB for all but ABSENT."""
    folder = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("graded")
    nbformat.write(answered(), folder / "correct.ipynb")
    wrong = with_solution(
        answered(), "toy_double_solution", "def double(x):\n    return 2 * abs(x)"
    )
    nbformat.write(wrong, folder / "hidden_fail.ipynb")
    (folder / f"{ABSENT}.ipynb").write_bytes(b"")
    course = Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=())
    settings = Settings(course=course, lab="toy", limits=LIMITS)
    grade_batch([folder], out, settings, progress=False, log=lambda *_: None)
    for result in load_results(out):
        if result["student"] != ABSENT:
            path = results_dir(out, OTHER_LAB) / f"{result['student']}.json"
            write_json_atomic(path, derived_result(result))
    write_csvs(out, load_results(out))  # grades.csv and totals.csv for both labs
    return out


def grades_table(out: Path) -> dict[tuple[str, str], list[dict]]:
    """grades.csv rows by (student, lab)."""
    table: dict[tuple[str, str], list[dict]] = {}
    for row in read_csv(out / "grades.csv"):
        table.setdefault((row["student"], row["lab"]), []).append(row)
    return table


def test_csv_has_one_row_per_student_with_totals_that_add_up(graded, capsys):
    """Does the CSV parse, with one row per student whose lab totals, statuses and question
    scores agree with grades.csv and totals.csv?"""
    assert cli.main(["export", "--out", str(graded)]) == 0
    path = graded / "export" / "grades.csv"
    assert str(path) in capsys.readouterr().out
    exported = read_csv(path)
    grades = grades_table(graded)
    totals = {(r["student"], r["lab"]): r for r in read_csv(graded / "totals.csv")}
    students = sorted({student for student, _ in grades})
    assert [row["student"] for row in exported] == students
    assert len(students) == 3
    for row in exported:
        for lab in ("toy", OTHER_LAB):
            questions = grades.get((row["student"], lab))
            if questions is None:
                assert row[f"{lab} total"] == row[f"{lab} status"] == ""
                continue
            assert float(row[f"{lab} total"]) == pytest.approx(
                sum(float(q["score"]) for q in questions)
            )
            assert row[f"{lab} status"] == totals[(row["student"], lab)]["status"]
            for question in questions:
                assert row[f"{lab}/{question['question']}"] == question["score"]
    assert not list(path.parent.glob(".*")), "a temporary file was left behind"


def test_csv_columns_are_the_ones_the_help_names(graded, capsys):
    """Is the header `student`, then per lab `<lab> total`, `<lab> status` and its questions
    in notebook order, and does --help say so?"""
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for words in ("columns: student;", "'<lab> total'", "'<lab> status'", "'<lab>/<grade_id>'"):
        assert words in help_text
    assert cli.main(["export", "--out", str(graded)]) == 0
    with open(graded / "export" / "grades.csv", newline="") as stream:
        header = next(csv.reader(stream))
    expected = ["student"]
    for lab in sorted({r["lab"] for r in load_results(graded)}):
        questions = []
        for row in read_csv(graded / "grades.csv"):
            if row["lab"] == lab and row["question"] not in questions:
                questions.append(row["question"])
        expected += [f"{lab} total", f"{lab} status"] + [f"{lab}/{q}" for q in questions]
    assert header == expected


def test_one_lab_uses_plain_grade_ids_and_goes_where_to_says(graded, tmp_path):
    """With --lab, are the question columns the bare grade_ids, in the file given by --to?"""
    target = tmp_path / "gradebook.csv"
    assert cli.main(["export", "--out", str(graded), "--lab", "toy", "--to", str(target)]) == 0
    exported = {row["student"]: row for row in read_csv(target)}
    for (student, lab), questions in grades_table(graded).items():
        if lab != "toy":
            continue
        assert {q["question"]: exported[student][q["question"]] for q in questions} == {
            q["question"]: q["score"] for q in questions
        }
    assert not any(OTHER_LAB in column for column in next(iter(exported.values())))


def check_gradescope_schema(value: dict) -> None:
    """The keys and types of Gradescope's autograder results.json that we write."""
    assert isinstance(value["score"], int | float)
    assert isinstance(value["execution_time"], int)
    assert isinstance(value["output"], str)
    assert value["visibility"] in VISIBILITIES
    assert value["stdout_visibility"] in VISIBILITIES
    assert isinstance(value["tests"], list) and value["tests"]
    for test in value["tests"]:
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], int | float) and isinstance(test["max_score"], int | float)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["visibility"] in VISIBILITIES


def test_gradescope_results_follow_the_schema_and_add_up(graded):
    """Is there one valid results.json per student, one test per grades.csv row with the same
    score, and a top-level score equal to the sum of the tests?"""
    assert cli.main(["export", "--out", str(graded), "--format", "gradescope"]) == 0
    folder = graded / "export" / "gradescope"
    grades = grades_table(graded)
    students = sorted({student for student, _ in grades})
    assert sorted(p.name for p in folder.iterdir()) == students
    for student in students:
        value = json.loads((folder / student / "results.json").read_text())
        check_gradescope_schema(value)
        assert value["score"] == pytest.approx(sum(t["score"] for t in value["tests"]))
        expected = {
            f"{lab}/{row['question']}": (float(row["score"]), float(row["max_score"]))
            for (who, lab), rows in grades.items()
            if who == student
            for row in rows
        }
        assert {t["name"]: (t["score"], t["max_score"]) for t in value["tests"]} == expected
        assert value["visibility"] == "visible"
        assert "BEGIN HIDDEN" not in json.dumps(value) and "assert " not in json.dumps(value)


def test_written_answers_are_included_as_graded_by_hand(graded):
    """Does a written answer appear with score 0, its full max_score and a note that a person
    grades it, so that the maximum matches totals.csv?"""
    assert cli.main(["export", "--out", str(graded), "--format", "gradescope"]) == 0
    totals = {(r["student"], r["lab"]): r for r in read_csv(graded / "totals.csv")}
    value = json.loads((graded / "export" / "gradescope" / "correct" / "results.json").read_text())
    manual = [
        row
        for (student, _), rows in grades_table(graded).items()
        if student == "correct"
        for row in rows
        if row["status"] == "manual"
    ]
    assert manual
    tests = {t["name"]: t for t in value["tests"]}
    for row in manual:
        test = tests[f"{row['lab']}/{row['question']}"]
        assert test["score"] == 0 and test["max_score"] == float(row["max_score"]) > 0
        assert "graded by hand" in test["output"]
    assert sum(t["max_score"] for t in value["tests"]) == sum(
        float(totals[("correct", lab)]["max_score"]) for lab in ("toy", OTHER_LAB)
    )


def test_visibility_is_configurable(graded, tmp_path):
    """Does --visibility set the visibility of every test and of the result?"""
    args = ["export", "--out", str(graded), "--format", "gradescope", "--to", str(tmp_path)]
    assert cli.main([*args, "--lab", "toy", "--visibility", "after_published"]) == 0
    value = json.loads((tmp_path / "correct" / "results.json").read_text())
    assert value["visibility"] == "after_published"
    assert {t["visibility"] for t in value["tests"]} == {"after_published"}
    assert {t["name"] for t in value["tests"]} == {
        row["question"] for row in grades_table(graded)[("correct", "toy")]
    }


def test_a_folder_without_results_exits_2_with_one_line(tmp_path):
    """Run on a folder `grade` never wrote (or for a lab it never graded), does export exit 2
    with a one-line error and write nothing?"""
    command = [sys.executable, "-m", "autograder", "export", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no grading results" in done.stderr
    assert not (tmp_path / "export").exists()


def test_an_unknown_lab_exits_2(graded, capsys):
    """Asked for a lab with no results, does export exit 2 and name the labs there are?"""
    assert cli.main(["export", "--out", str(graded), "--lab", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "toy" in err and OTHER_LAB in err
