"""Written answers graded by a person: does ``grade`` keep them, does ``written`` lay them out
per question with a scores file that never loses what was typed in, and does ``export`` add
the scores (and refuse a wrong one)?

Four toy submissions are graded once (tests/fixtures/toy, whose one written question is
``toy_q_why``, 1 point): the solution's answer, a blank one (the release's placeholder), an
answer holding HTML, and an empty file (unreadable). Expected totals are derived from
``totals.csv``, never typed in.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nbformat
import pytest
from toy import TOY_LIMITS, TOY_ROOT, answered, cell_by_id, read_csv, with_solution

from autograder import cli, grade
from autograder.course import COURSE_ROOT, Course
from autograder.grade import Settings, grade_batch, load_results
from autograder.notebooks import TEXT_STUB
from autograder.written import NO_ANSWER, SCORES_COLUMNS, scores_path, with_hand_scores

LIMITS = TOY_LIMITS
QUESTION = "toy_q_why"
HTML_ANSWER = "Because <script>alert('x')</script> signs & <b>cancel</b>."
COURSE = ["--course", str(TOY_ROOT)]

pytestmark = pytest.mark.timeout(300)


def submissions(folder: Path) -> None:
    nbformat.write(answered(), folder / "solution.ipynb")
    nbformat.write(with_solution(answered(), QUESTION, TEXT_STUB), folder / "blank.ipynb")
    nbformat.write(with_solution(answered(), QUESTION, HTML_ANSWER), folder / "html.ipynb")
    (folder / "empty.ipynb").write_bytes(b"")


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("submissions")
    submissions(folder)
    out = tmp_path_factory.mktemp("graded")
    course = Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=())
    grade_batch([folder], out, Settings(course=course, lab="toy", limits=LIMITS), progress=False)
    return out


def fresh_copy(graded: Path, tmp_path: Path) -> Path:
    """The graded folder's results and CSVs, for a test that writes scores."""
    out = tmp_path / "out"
    for path in graded.rglob("*"):
        if path.is_file() and "written" not in path.parts and "export" not in path.parts:
            target = out / path.relative_to(graded)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return out


def score_rows(out: Path) -> list[dict]:
    return read_csv(scores_path(out, "toy"))


def write_scores(out: Path, rows: list[dict]) -> None:
    with scores_path(out, "toy").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=SCORES_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def score_the_solution(out: Path, comment: str) -> list[dict]:
    """Run ``written``, then give the solution's answer 0.5 and ``comment``; the rows."""
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    rows = score_rows(out)
    for row in rows:
        if row["student"] == "solution":
            row["score"], row["comment"] = "0.5", comment
    write_scores(out, rows)
    return rows


def test_grade_keeps_each_students_written_answer(graded):
    answers = {r["student"]: r.get("answers") for r in load_results(graded)}
    assert answers["solution"] == {QUESTION: cell_by_id(answered(), QUESTION).source}
    assert answers["blank"] == {QUESTION: TEXT_STUB}
    assert answers["html"] == {QUESTION: HTML_ANSWER}
    assert answers["empty"] is None  # unreadable: nothing to keep


def test_written_lays_out_each_question_and_a_scores_file(graded, tmp_path, capsys):
    out = fresh_copy(graded, tmp_path)
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    assert "scores to fill in" in capsys.readouterr().out
    rows = {r["student"]: r for r in score_rows(out)}
    assert set(rows) == {"solution", "blank", "html"}  # not the unreadable one
    assert {r["question"] for r in rows.values()} == {QUESTION}
    totals = {r["student"]: r for r in read_csv(out / "grades.csv") if r["question"] == QUESTION}
    assert {r["max_score"] for r in rows.values()} == {totals["solution"]["max_score"]}
    assert (rows["blank"]["score"], rows["blank"]["comment"]) == ("0", NO_ANSWER)
    assert rows["solution"]["score"] == rows["html"]["score"] == ""
    page = (out / "written" / "toy" / f"{QUESTION}.html").read_text()
    assert "Why is squaring never negative?" in page  # the prompt, from the source
    assert "A product of two numbers with the same sign is positive." in page  # reference
    assert "BEGIN SOLUTION" not in page.split("Answers (")[0]  # delimiters cut from it
    assert "&lt;script&gt;alert(" in page and "<script" not in page  # shown, never run
    assert f"({NO_ANSWER}: scored 0)" in page
    assert "empty" not in re.findall(r"<h3 id='([^']*)'", page)
    index = (out / "written" / "toy" / "index.html").read_text()
    assert f"href='{QUESTION}.html'" in index


def test_export_adds_the_scores_typed_in_and_refuses_a_wrong_one(graded, tmp_path, capsys):
    out = fresh_copy(graded, tmp_path)
    rows = score_the_solution(out, "right, but say why the signs cancel")
    assert cli.main(["export", "--out", str(out)]) == 0
    totals = {r["student"]: r for r in read_csv(out / "totals.csv")}  # grade's: unchanged
    table = {r["student"]: r for r in read_csv(out / "export" / "grades.csv")}
    assert float(table["solution"]["toy total"]) == float(totals["solution"]["score"]) + 0.5
    assert table["solution"][QUESTION] == "0.5" and table["solution"]["toy status"] == "ok"
    assert float(table["blank"]["toy total"]) == float(totals["blank"]["score"])
    assert table["blank"]["toy status"] == "ok"  # its blank answer came scored 0
    assert table["html"]["toy status"] == "manual"  # not scored yet
    assert cli.main(["export", "--out", str(out), "--format", "gradescope"]) == 0
    value = json.loads((out / "export" / "gradescope" / "solution" / "results.json").read_text())
    (test,) = [t for t in value["tests"] if t["name"] == QUESTION]
    assert test["score"] == 0.5 and "say why the signs cancel" in test["output"]
    assert value["score"] == sum(t["score"] for t in value["tests"])
    before = (out / "export" / "grades.csv").read_bytes()
    for bad in ("2", "-1", "half", "nan"):
        write_scores(out, [{**rows[0], "score": bad}])
        assert cli.main(["export", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert f"scores.csv:2: the score '{bad}'" in error and "from 0 to 1" in error
        assert (out / "export" / "grades.csv").read_bytes() == before  # nothing written
    for student, question in (("solution", "toy_double"), ("nobody", QUESTION)):
        write_scores(out, [{**rows[0], "student": student, "question": question, "score": "1"}])
        assert cli.main(["export", "--out", str(out)]) == 2  # not dropped without a word
        error = capsys.readouterr().err
        assert f"scores.csv:2: no written answer of {student!r} for {question!r}" in error
    path = scores_path(out, "toy")
    path.write_text(f"{','.join(SCORES_COLUMNS)}\nsolution,{QUESTION},1,0,5\n")
    assert cli.main(["export", "--out", str(out)]) == 2  # 0,5 is not 0 with a comment of 5
    assert "scores.csv:2: the score '0' and the comment '5'" in capsys.readouterr().err
    path.write_text(f"{','.join(SCORES_COLUMNS)}\nsolution,{QUESTION},1,0,good, but short\n")
    assert cli.main(["export", "--out", str(out)]) == 2  # the comment cut at the comma
    assert "scores.csv:2: more fields than the first line names" in capsys.readouterr().err
    write_scores(out, [{**rows[0], "score": "1"}, {**rows[0], "score": "0"}])
    assert cli.main(["export", "--out", str(out)]) == 2
    assert "scores.csv:3: " in (error := capsys.readouterr().err) and "on line 2 already" in error


def test_written_again_keeps_what_was_typed_and_adds_new_students(graded, tmp_path, capsys):
    out = fresh_copy(graded, tmp_path)
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    rows = [r for r in score_rows(out) if r["student"] != "html"]  # as if graded later
    rows[0]["score"], rows[0]["comment"] = "1", "typed in"
    write_scores(out, rows)
    typed = dict(rows[0])
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    assert "(1 rows added)" in capsys.readouterr().out
    again = score_rows(out)
    assert typed in again and {r["student"] for r in again} == {"solution", "blank", "html"}
    path = scores_path(out, "toy")
    path.write_text("name;points\nsolution;1\n")
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 2
    assert "not a scores file" in capsys.readouterr().err
    assert path.read_text() == "name;points\nsolution;1\n"  # left as it was


def test_a_blank_answer_answered_later_waits_for_a_person_again(graded, tmp_path, capsys):
    """The 0 that ``written`` gives a blank answer holds only while it is blank: once the
    student's regraded notebook has an answer, export leaves it unscored (manual) and
    ``written`` empties that row again; a 0 a person typed with another comment stays."""
    out = fresh_copy(graded, tmp_path)
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    stored = grade.results_dir(out, "toy") / "blank.json"
    result = json.loads(stored.read_text())
    result["answers"][QUESTION] = "Signs cancel."  # as a regrade of a new notebook stores it
    stored.write_text(json.dumps(result))
    assert cli.main(["export", "--out", str(out)]) == 0
    table = {r["student"]: r for r in read_csv(out / "export" / "grades.csv")}
    assert table["blank"]["toy status"] == "manual"
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    rows = {r["student"]: r for r in score_rows(out)}
    assert (rows["blank"]["score"], rows["blank"]["comment"]) == ("", "")
    page = (out / "written" / "toy" / f"{QUESTION}.html").read_text()
    assert "Signs cancel." in page


def test_a_scored_answer_that_changed_is_scored_again(graded, tmp_path, capsys):
    """A person scored two answers; then one student's notebook is graded again with another
    answer. ``export`` stops (exit 2) naming that student, instead of giving the new answer
    the old score; ``written`` puts that score back to waiting, the old one kept in the
    comment, and says so (in every row of it: a duplicated line too); ``export`` then leaves
    it unscored; ``grade``'s pages (not strict) leave only that answer waiting meanwhile. The
    unchanged answer keeps its score throughout."""
    out = fresh_copy(graded, tmp_path)
    rows = score_the_solution(out, "good")
    for row in rows:
        if row["student"] == "html":
            row["score"], row["comment"] = "1", "fine"
    write_scores(out, rows)
    assert cli.main(["export", "--out", str(out)]) == 0
    stored = grade.results_dir(out, "toy") / "solution.json"
    result = json.loads(stored.read_text())
    result["answers"][QUESTION] = "A new answer."  # as a regrade of a new notebook stores it
    stored.write_text(json.dumps(result))
    capsys.readouterr()
    assert cli.main(["export", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 written answer(s) changed since they were scored" in err
    assert f"solution ({QUESTION})" in err and "html" not in err
    lenient = {r["student"]: r for r in with_hand_scores(out, load_results(out), strict=False)}
    statuses = {
        s: [row["status"] for row in r["rows"] if row["question"] == QUESTION]
        for s, r in lenient.items()
    }
    assert statuses["solution"] == ["manual"] and statuses["html"] == ["ok"]  # grade's pages
    duplicated = score_rows(out)
    duplicated.append({**next(r for r in duplicated if r["student"] == "solution"), "score": ""})
    write_scores(out, duplicated)  # a pasted line: the scored row first, an empty copy after
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    assert "1 answer(s) changed since they were scored" in capsys.readouterr().out
    solution_rows = [r for r in score_rows(out) if r["student"] == "solution"]
    assert [r["score"] for r in solution_rows] == ["", ""]
    rows = {r["student"]: r for r in score_rows(out)}
    assert rows["solution"]["score"] == ""
    assert solution_rows[0]["comment"] == "answer changed since it was scored 0.5; good"
    assert (rows["html"]["score"], rows["html"]["comment"]) == ("1", "fine")
    assert cli.main(["export", "--out", str(out)]) == 0
    table = {r["student"]: r for r in read_csv(out / "export" / "grades.csv")}
    assert table["solution"]["toy status"] == "manual"
    assert table["html"]["toy status"] != "manual"


def test_an_answer_in_a_pasted_copy_is_shown_and_a_lost_cell_is_not_scored(tmp_path):
    """An answer typed into a pasted copy of the answer cell (the original left blank) is
    the answer kept; an answer cell whose metadata was removed is "not found", never an
    automatic 0."""
    course = Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=())
    lab = course.load("toy")
    pasted = with_solution(answered(), QUESTION, TEXT_STUB)
    copy_cell = nbformat.from_dict(json.loads(json.dumps(cell_by_id(pasted, QUESTION))))
    copy_cell.source, copy_cell["id"] = "It is x times x.", "pasted-copy"
    pasted.cells.append(copy_cell)
    assert grade.written_answers(lab, pasted) == {QUESTION: "It is x times x."}
    lost = answered()
    del cell_by_id(lost, QUESTION).metadata["nbgrader"]
    assert grade.written_answers(lab, lost) == {QUESTION: None}
    out = tmp_path / "out"
    result = {"student": "lost", "lab": "toy", "status": "manual", "answers": {QUESTION: None}}
    result["rows"] = [
        {"question": QUESTION, "score": 0, "max_score": 1, "status": "manual", "message": ""}
    ]
    grade.write_json_atomic(
        grade.results_dir(out, "toy") / "lost.json",
        result
        | {
            "version": grade.RESULT_VERSION,
            "score": 0,
            "max_score": 1,
            "changes": {},
        },
    )
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    (row,) = score_rows(out)
    assert row["score"] == "" and row["comment"] == ""
    page = (out / "written" / "toy" / f"{QUESTION}.html").read_text()
    assert "no cell of the notebook is this answer" in page


def test_the_placeholder_is_nbgraders():
    """A blank answer is the release's text stub: the one nbgrader_config.py sets."""
    config = (COURSE_ROOT / "nbgrader_config.py").read_text()
    assert f'c.ClearSolutions.text_stub = "{TEXT_STUB}"' in config


def test_export_puts_the_hand_scores_on_the_feedback_pages(graded, tmp_path, capsys):
    """The score table at the top of each feedback page is rewritten with the scores and
    comments a person gave (escaped); the student's cells below it are left as they were, and
    taking a score back restores the page as ``grade`` wrote it."""
    out = fresh_copy(graded, tmp_path)
    page = out / "feedback" / "solution" / "toy.html"
    before = page.read_text()
    table_end = before.index("</table>")
    assert "graded by a person; the table at the top of this page shows its score" in before
    rows = score_the_solution(out, "<b>say why</b> the signs cancel")
    (out / "feedback" / "html" / "toy.html").unlink()
    assert cli.main(["export", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "brought up to date" in said
    assert "no feedback page to bring up to date for 1 student: html" in said
    after = page.read_text()
    total = {r["student"]: r for r in read_csv(out / "export" / "grades.csv")}["solution"]
    assert f"score <b>{total['toy total']} / " in after
    assert "graded by hand: &lt;b&gt;say why&lt;/b&gt; the signs cancel" in after
    assert "<b>say why" not in after
    cells_before = before[before.index("</div>", table_end) :]
    assert after[after.index("</div>", after.index("</table>")) :] == cells_before
    write_scores(out, [{**row, "score": ""} for row in rows])
    assert cli.main(["export", "--out", str(out)]) == 0
    assert page.read_text() == before


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text(tmp_path, capsys):
    """A student id that starts like a formula (it comes from a file name) is written with a
    leading ' in every CSV (grades.csv, totals.csv, scores.csv, the export), and so is one
    starting with ' (or "'-x" and "-x" would be one cell); a CR in an id never breaks its
    row; a scores file holding them, saved again by a spreadsheet, still matches each
    student."""
    out = tmp_path / "out"
    students = ["=SUM(1,2)", "+1", "-x", "@me", "'-x", "'ann", "x\r=1+1", "\rcr", "ann"]
    written = {s: "'" + s if s[:1] in "=+-@\t\r'" else s for s in students}
    for student in students:
        answer = "" if student == "ann" else "Signs cancel."
        result = {
            "version": grade.RESULT_VERSION,
            "student": student,
            "lab": "toy",
            "status": "manual",
            "score": 0,
            "max_score": 1,
            "changes": {},
            "answers": {QUESTION: answer},
            "rows": [
                {
                    "question": QUESTION,
                    "score": 0,
                    "max_score": 1,
                    "status": "manual",
                    "message": "",
                }
            ],
        }
        grade.write_json_atomic(
            grade.results_dir(out, "toy") / f"{grade.safe_name(student)}.json", result
        )
    from autograder.tables import write_csvs

    write_csvs(out, load_results(out))
    assert cli.main(["written", *COURSE, "--out", str(out)]) == 0
    rows = score_rows(out)
    for row in rows:
        row["score"] = "1"
    write_scores(out, rows)  # as a spreadsheet saves it: the ' kept
    assert cli.main(["export", "--out", str(out)]) == 0
    for path in (
        out / "grades.csv",
        out / "totals.csv",
        scores_path(out, "toy"),
        out / "export" / "grades.csv",
    ):
        lines = list(csv.reader(path.open(newline="")))
        assert not [c for line in lines for c in line if c[:1] in ("=", "+", "-", "@")], path
        assert {line[0] for line in lines[1:]} == set(written.values()), path
    table = {r["student"]: r for r in read_csv(out / "export" / "grades.csv")}
    assert len(table) == len(students)
    assert {table[written[s]][QUESTION] for s in students} == {"1"}
