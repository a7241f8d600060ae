"""The class summary (``autograder.summary``): are its counts the class's, brute-forced from
the results, is every student-made text escaped, and do ``grade`` and ``export`` write it?

The results are made here (the layout ``grade`` stores), so that every count is known; the
toy course is graded once, through the command line, for the pages ``grade`` writes.
"""

from __future__ import annotations

import base64
import csv
import re
import statistics

import nbformat
import pytest
from toy import TOY_ROOT, answered, read_csv, with_solution

from autograder import cli, grade, summary
from autograder.grade import feedback_path

LAB = "lab_x"
MESSAGE = "failed: AssertionError: the mask keeps 3 weights, expected 2"


def result(student: str, rows: list[tuple], status: str = "ok", lab: str = LAB) -> dict:
    """A stored result: rows of (question, score, max_score, status, message)."""
    made = [
        {"question": q, "score": s, "max_score": m, "status": st, "message": msg}
        for q, s, m, st, msg in rows
    ]
    return {
        "student": student,
        "lab": lab,
        "status": status,
        "score": sum(row["score"] for row in made),
        "max_score": sum(row["max_score"] for row in made),
        "rows": made,
    }


def class_of(n: int) -> list[dict]:
    """n students: student i scores q_a fully when i is even, fails q_b with one of two
    messages, and has a written answer scored by hand only when i % 3 == 0."""
    results = []
    for i in range(n):
        q_a = ("q_a", 2.0 if i % 2 == 0 else 0.0, 2.0, "ok", "passed" if i % 2 == 0 else MESSAGE)
        q_b = ("q_b", 0.0, 3.0, "ok", f"{'wrong shape' if i % 4 else 'wrong dtype'}\ndetails {i}")
        if i % 3 == 0:
            written = ("q_why", 1.0, 5.0, "ok", "graded by hand")
        else:
            written = ("q_why", 0.0, 5.0, "manual", "written answer: graded by a person")
        results.append(result(f"s{i:02d}", [q_a, q_b, written], "ok" if i % 3 == 0 else "manual"))
    return results


def test_the_counts_are_the_classs():
    """Counted by hand from ``class_of``; an unreadable notebook and one the grader failed
    on are counted by status only, never as scores or failures (their written answers
    are not scored 0 by a person)."""
    unread = [("q_a", 0.0, 2.0, "unreadable", "not graded"), ("q_why", 0.0, 5.0, "unreadable", "")]
    failed = result("zed", [("q_a", 0.0, 2.0, "error", "the grader failed: boom")], "error")
    failed["internal_error"] = True
    results = class_of(12) + [
        result("other", [("q_a", 2.0, 2.0, "ok", "")], lab="lab_y"),
        result("unread", unread, "unreadable"),
        failed,
    ]
    gathered = summary.gather(LAB, results)
    assert gathered.statuses["unread"] == "unreadable" and gathered.totals["unread"] == 0
    mine = [r for r in results if r["lab"] == LAB and r["student"] not in ("unread", "zed")]
    assert gathered.totals == {r["student"]: r["score"] for r in mine} | {"unread": 0, "zed": 0}
    assert gathered.max_score == 10.0
    by_name = {q.name: q for q in gathered.questions}
    assert [q.name for q in gathered.questions] == ["q_a", "q_b", "q_why"]  # notebook order
    assert by_name["q_a"].full_marks == sum(i % 2 == 0 for i in range(12))
    assert by_name["q_a"].failures == {MESSAGE: sum(i % 2 == 1 for i in range(12))}
    assert len(by_name["q_a"].scores) == 12
    assert by_name["q_a"].statuses["unreadable"] == by_name["q_a"].statuses["error"] == 1
    assert by_name["q_b"].failures == {  # first lines only, counted by student
        "wrong shape": sum(i % 4 != 0 for i in range(12)),
        "wrong dtype": sum(i % 4 == 0 for i in range(12)),
    }
    assert by_name["q_why"].waiting == sum(i % 3 != 0 for i in range(12))
    assert by_name["q_why"].scores == [1.0] * sum(i % 3 == 0 for i in range(12))
    assert by_name["q_why"].failures == {"graded by hand": 4}  # scored, below its points
    line = summary.headline(gathered)
    median = statistics.median([r["score"] for r in mine] + [0, 0])
    assert f"median total {median:g} of 10" in line
    assert "fewest full marks: q_b (0 of 12 students)" in line


def test_the_page_escapes_what_students_made_and_links_their_feedback():
    evil = "<script>alert(1)</script>"
    results = class_of(3) + [
        result(evil, [("q_a", 0.0, 2.0, "error", f"died: {evil}")], "error"),
        result("tom", [("q_a", 0.0, 2.0, "tampered", "failed: restored")], "tampered"),
    ]
    page = summary.page(summary.gather(LAB, results))
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "died: &lt;script&gt;" in page
    for student, status in ((evil, "error"), ("tom", "tampered")):
        link = feedback_path(summary.Path(".."), student, LAB).as_posix()
        assert re.search(rf"<h2>Status {status} \(1\)</h2><p><a href='{re.escape(link)}'>", page)
    (image,) = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")
    assert "waiting for a person 2" in page  # s01, s02


@pytest.mark.timeout(300)
def test_grade_writes_it_and_export_adds_the_hand_scores(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nbformat.write(answered(), folder / "ann.ipynb")
    nbformat.write(with_solution(answered(), "toy_q_why", "Signs cancel."), folder / "bob.ipynb")
    out = tmp_path / "out"
    course = ["--course", str(TOY_ROOT)]
    args = ["grade", *course, "--lab", "toy", str(folder), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    said = capsys.readouterr().out
    totals = [float(row["score"]) for row in read_csv(out / "totals.csv")]
    assert f"class summary: {out / 'summary' / 'toy.html'} (toy: median total " in said
    assert f"median total {statistics.median(totals):g} of" in said
    page = (out / "summary" / "toy.html").read_text()
    assert "2 students" in page and "waiting for a person 2" in page
    assert cli.main(["written", *course, "--out", str(out)]) == 0
    scores = out / "written" / "toy" / "scores.csv"
    rows = [{**row, "score": row["max_score"], "comment": "ok"} for row in read_csv(scores)]
    with scores.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli.main(["export", "--out", str(out)]) == 0
    page = (out / "summary" / "toy.html").read_text()
    assert "waiting for a person" not in page
    scored = "toy_q_why</td><td class='n'>1</td><td class='n'>1</td><td class='n'>2 of 2"
    assert scored in page
    assert "graded by hand: ok" in (out / "feedback" / "bob" / "toy.html").read_text()
    capsys.readouterr()
    assert cli.main([*args, "--regrade"]) == 0  # a late regrade keeps the hand scores shown
    assert "warning" not in capsys.readouterr().out
    assert scored in (out / "summary" / "toy.html").read_text()
    assert "graded by hand: ok" in (out / "feedback" / "bob" / "toy.html").read_text()
    (out / "summary" / "toy.html").unlink()
    (out / "summary").rmdir()
    (out / "summary").write_text("in the way")
    assert cli.main(["export", "--out", str(out)]) == 2  # one line, no traceback
    assert "error: cannot write the export: " in capsys.readouterr().err
    (out / "summary").unlink()
    lock = grade.lock_output(out)  # a grade run writing to the folder
    try:
        assert cli.main(["export", "--out", str(out)]) == 2
        assert "another grade or export run (pid " in capsys.readouterr().err
    finally:
        lock.close()
