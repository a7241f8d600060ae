"""Written answers, graded by a person: ``written`` gathers them, ``export`` adds the scores.

``grade`` keeps each student's written answers with the stored result (``answers``: the text
of each written-answer cell, by grade_id). ``python -m autograder written --out DIR`` writes,
for each lab graded into DIR:

- ``DIR/written/<lab>/<grade_id>.html``: one page per question: its prompt and the reference
  answer from the source (for the person grading: the folder is the instructor's, never the
  students'), then every student's answer in student order, as plain text, blank ones marked
  (unreadable notebooks, which score 0 everywhere, are left out);
- ``DIR/written/<lab>/index.html``: the questions, with how many answers are blank and how
  many are scored;
- ``DIR/written/<lab>/scores.csv``: ``student,question,max_score,score,comment``, one row per
  student and question, in question order, for a person to fill in ``score`` (and
  ``comment``). A blank answer comes with score 0 and the comment "no answer" (that 0 holds
  only while the answer is blank: once a regraded notebook has one, ``export`` leaves it to
  a person and ``written`` empties the row). Running ``written`` again (after more students
  were graded) keeps every other row of the file as it is and adds the missing ones:
  nothing typed in is overwritten, except a score given to an answer that has changed since
  ``written`` showed it (a notebook graded again): that score goes back to waiting, kept in
  the comment (``answers-shown.json`` beside the scores holds a digest of each answer shown).
  A student's answer typed into a pasted copy of the answer cell is the one shown; a cell
  whose metadata was removed is "not found".

``export`` reads each lab's ``scores.csv`` when there is one: a score given there replaces
the written answer's 0 (status ``ok``, the comment in the message) in the export's totals and
cells; an empty score stays ``manual``. A score that is not a number from 0 to the question's
points, a line with more fields than the header (an unquoted comma) or a score for a
student and question with no written answer waiting (an id a spreadsheet changed), or a
score of an answer that changed since it was shown, stops ``export`` (``WrittenError``, exit
2) naming the file and line: a score is never dropped, or given to another answer, without a
word. ``export`` also puts them on the class summary and in the score table of
each student's feedback page (``export.refresh_pages``; ``grade`` too, once a scores file
exists). ``grade``'s own ``grades.csv`` and ``totals.csv`` keep written answers at 0:
waiting for a person.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import html
import io
import json
import math
from pathlib import Path

from autograder.course import Course
from autograder.grade import STATUS_ORDER, feedback_path, safe_name
from autograder.notebooks import (
    SOLUTION_BEGIN,
    SOLUTION_END,
    Lab,
    is_blank,
    marked_regions,
    source_text,
)
from autograder.tables import csv_text, from_spreadsheet, number, write_text_atomic

SCORES_COLUMNS = ["student", "question", "max_score", "score", "comment"]
NO_ANSWER = "no answer"
_STYLE = (
    "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
    ".answer{white-space:pre-wrap;border-left:3px solid #89a;padding:.3em .8em;"
    "background:#f6f7f9}.blank{color:#a33}.reference{border-left-color:#3a6}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}</style>"
)


class WrittenError(ValueError):
    """A scores file that cannot be used; the message names the file and line."""


def scores_path(out: Path, lab: str) -> Path:
    return Path(out) / "written" / lab / "scores.csv"


def _shown_path(out: Path, lab: str) -> Path:
    """Beside the scores file: a digest of each answer as ``written`` last showed it."""
    return scores_path(out, lab).with_name("answers-shown.json")


def _shown(out: Path, lab: str) -> dict[str, str]:
    """``"student\\tquestion"`` -> digest of the answer ``written`` last showed (empty when
    there is no such file, or it cannot be read: then nothing counts as changed)."""
    try:
        shown = json.loads(_shown_path(out, lab).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return shown if isinstance(shown, dict) else {}


def _digest(result: dict, grade_id: str) -> str | None:
    """A digest of a student's answer (None when the result holds none to compare)."""
    state, answer = _answer(result, grade_id)
    if state in (NOT_FOUND, NOT_STORED):
        return None
    return hashlib.sha256(answer.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _changed(shown: dict[str, str], student: str, grade_id: str, digest: str | None) -> bool:
    """Whether the answer differs from the one ``written`` showed when it was scored."""
    before = shown.get(f"{student}\t{grade_id}")
    return before is not None and digest is not None and before != digest


def _prompt(lab: Lab, grade_id: str) -> str:
    """The markdown cell just before a written-answer cell in the source: its question."""
    index = lab.by_id[grade_id].index
    if index > 0 and lab.notebook.cells[index - 1].get("cell_type") == "markdown":
        return source_text(lab.notebook.cells[index - 1])
    return ""


def _reference(source: str) -> str:
    """The solution regions of a source cell, without their delimiter lines."""
    lines, kept = source.split("\n"), []
    for region in marked_regions(source, SOLUTION_BEGIN, SOLUTION_END):
        body = region[1:]  # the first line holds BEGIN SOLUTION
        if body and SOLUTION_END in lines[body[-1] - 1]:
            body = body[:-1]
        kept += [lines[number - 1] for number in body]
    return "\n".join(kept).strip()


LINE = "_line"  # a row's line number in the file, in the rows ``_read_rows`` returns


def _read_rows(path: Path) -> list[dict]:
    """The rows of a scores file, each with its line number (``LINE``); ``WrittenError``
    when it is not one."""
    try:
        # a spreadsheet may add a BOM; no newline translation: a CR inside a quoted cell stays
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise WrittenError(f"{path}: cannot be read ({error})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != SCORES_COLUMNS:
        raise WrittenError(
            f"{path}: not a scores file: its first line must be {','.join(SCORES_COLUMNS)} "
            f"(found {','.join(reader.fieldnames or []) or 'nothing'})"
        )
    rows = []
    for row in reader:
        line = reader.line_num  # where the row ends (a quoted cell may hold line breaks)
        if None in row:
            raise WrittenError(
                f"{path}:{line}: more fields than the first line names (an unquoted comma? "
                "write 0.5, not 0,5, and put a comment holding a comma in double quotes)"
            )
        values = {key.strip(): from_spreadsheet(value or "") for key, value in row.items()}
        # the student id as written (it may end in a space); the rest without spaces
        rows.append({k: v if k == "student" else v.strip() for k, v in values.items()})
        rows[-1][LINE] = line
    return rows


def write_pages(
    out: Path, course: Course, results: list[dict]
) -> list[tuple[str, Path, int, list[str]]]:
    """Write the pages and the scores file of each lab of ``results`` (the results graded
    into ``out``: ``export.select_results``). Returns (lab, scores file, rows added, the
    answers whose score was put back to waiting because the answer changed since) per lab.
    ``WrittenError`` when an existing scores file cannot be read (it is then left as it is)."""
    by_lab: dict[str, list[dict]] = {}
    for result in results:
        by_lab.setdefault(result["lab"], []).append(result)
    done = []
    for name, results in sorted(by_lab.items()):
        spec = course.spec(name)
        questions = [q for q in spec.questions if q.kind == "manual"]
        if not questions:
            continue
        # an unreadable notebook has no answers to read: it scores 0 for every cell anyway
        results = sorted(
            (r for r in results if r["status"] != "unreadable"), key=lambda r: r["student"]
        )
        folder = Path(out) / "written" / name
        path = scores_path(out, name)
        rows = _read_rows(path) if path.exists() else []
        have: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            have.setdefault((row["student"], row["question"]), []).append(row)
        shown = _shown(out, name)
        added, rescore = 0, []
        for question in questions:
            for result in results:
                blank = _answer(result, question.grade_id)[0] == BLANK
                mine = have.get((result["student"], question.grade_id), [])
                digest = _digest(result, question.grade_id)
                changed = _changed(shown, result["student"], question.grade_id, digest)
                if digest is not None:
                    shown[f"{result['student']}\t{question.grade_id}"] = digest
                for row in mine:  # every row of it (a duplicate line too)
                    if _automatic(row) and not blank:  # answered since: a person scores it
                        row["score"] = row["comment"] = ""
                    elif row["score"] and changed:  # a regraded notebook: to be scored again
                        was = f"answer changed since it was scored {row['score']}"
                        row["comment"] = f"{was}; {row['comment']}" if row["comment"] else was
                        row["score"] = ""
                        entry = f"{result['student']} ({question.grade_id})"
                        if entry not in rescore:
                            rescore.append(entry)
                if mine:
                    continue
                rows.append(
                    {
                        "student": result["student"],
                        "question": question.grade_id,
                        "max_score": number(question.points),
                        "score": "0" if blank else "",
                        "comment": NO_ANSWER if blank else "",
                    }
                )
                added += 1
        order = {q.grade_id: i for i, q in enumerate(questions)}
        rows.sort(key=lambda r: (order.get(r["question"], len(order)), r["student"]))
        table = [[row[column] for column in SCORES_COLUMNS] for row in rows]
        write_text_atomic(path, csv_text(SCORES_COLUMNS, table))
        write_text_atomic(_shown_path(out, name), json.dumps(shown, indent=0, sort_keys=True))
        scored = {(r["student"], r["question"]) for r in rows if r["score"]}
        index = []
        for question in questions:
            page = folder / f"{safe_name(question.grade_id)}.html"
            blank = sum(_answer(r, question.grade_id)[0] == BLANK for r in results)
            marked = sum((r["student"], question.grade_id) in scored for r in results)
            write_text_atomic(page, _question_page(spec, question, results))
            index.append(
                f"<tr><td><a href='{html.escape(page.name)}'>{html.escape(question.grade_id)}"
                f"</a></td><td>{number(question.points)}</td><td>{len(results)}</td>"
                f"<td>{blank}</td><td>{marked}</td></tr>"
            )
        write_text_atomic(
            folder / "index.html",
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(name)}: "
            f"written answers</title>{_STYLE}</head><body><h1>{html.escape(name)}: written "
            "answers</h1><p>Score them in <code>scores.csv</code> (column <code>score</code>, "
            "and <code>comment</code> if you like); <code>export</code> adds them to the "
            "totals. Blank answers are scored 0 already.</p><table><tr><th>question</th>"
            "<th>points</th><th>students</th><th>blank</th><th>scored</th></tr>"
            + "".join(index)
            + "</table></body></html>",
        )
        done.append((name, path, added, rescore))
    return done


# What a stored result says of one written answer (``_answer``).
BLANK, NOT_FOUND, NOT_STORED = "blank", "not found", "not stored"


def _answer(result: dict, grade_id: str) -> tuple[str, str]:
    """(state, text) of a student's answer: ("text", the answer), (BLANK, ""), (NOT_FOUND,
    "") when the notebook has no cell claiming it (its metadata was removed), (NOT_STORED, "")
    for a result stored before answers were kept."""
    answers = result.get("answers")
    if not isinstance(answers, dict) or grade_id not in answers:
        return NOT_STORED, ""
    if answers[grade_id] is None:
        return NOT_FOUND, ""
    text = str(answers[grade_id])
    return (BLANK, "") if is_blank(text) else ("text", text)


def _automatic(row: dict) -> bool:
    """Whether a scores row is the 0 ``written`` gives a blank answer, untouched."""
    return row["score"] == "0" and row["comment"] == NO_ANSWER


def _question_page(lab: Lab, question, results: list[dict]) -> str:
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(lab.name)}: "
        f"{html.escape(question.grade_id)}</title>{_STYLE}</head><body>",
        f"<p><a href='index.html'>{html.escape(lab.name)}: written answers</a></p>",
        f"<h1>{html.escape(question.grade_id)} ({number(question.points)} "
        f"point{'s' if question.points != 1 else ''})</h1>",
        f"<div class='answer'>{html.escape(_prompt(lab, question.grade_id))}</div>",
        "<h2>Reference answer (from the source; never shown to students)</h2>",
        f"<div class='answer reference'>{html.escape(_reference(question.source))}</div>",
        f"<h2>Answers ({len(results)} students)</h2>",
    ]
    for result in results:
        state, answer = _answer(result, question.grade_id)
        student = html.escape(result["student"])
        parts.append(f"<h3 id='{html.escape(safe_name(result['student']))}'>{student}</h3>")
        feedback = feedback_path(Path(), result["student"], lab.name).as_posix()
        why = {
            NOT_STORED: "not stored: graded before answers were kept; grade again with --regrade",
            NOT_FOUND: "no cell of the notebook is this answer's (its nbgrader metadata was "
            f"removed?): read it in the student's notebook or in {feedback}",
            BLANK: f"{NO_ANSWER}: scored 0",
        }
        if state in why:
            parts.append(f"<p class='blank'>({html.escape(why[state])})</p>")
        else:
            parts.append(f"<div class='answer'>{html.escape(answer)}</div>")
    parts.append("</body></html>")
    return "".join(parts)


def hand_scores(
    out: Path, lab: str, results: list[dict], strict: bool = True
) -> dict[tuple[str, str], tuple]:
    """(student, question) -> (score, comment) from the lab's scores file, for the written
    answers of ``results`` (empty when there is no file; rows without a score are left out,
    and so is the 0 ``written`` gave a blank answer that has been answered since).
    ``WrittenError`` names the line of a score that is not a number from 0 to the
    question's points, of a score for a (student, question) with no written answer waiting
    (an id changed by a spreadsheet, a student whose notebook is now unreadable), and of a
    second score for the same one. A score of an answer that changed since ``written`` showed
    it is a ``WrittenError`` too, or with ``strict`` False (``grade``'s pages) left out: that
    answer waits for a person again."""
    path = scores_path(out, lab)
    if not path.exists():
        return {}
    waiting = {
        (result["student"], row["question"]): (float(row["max_score"]), result)
        for result in results
        for row in result["rows"]
        if row["status"] == "manual"
    }
    found, lines = {}, {}
    shown, changed = _shown(out, lab), []
    for row in _read_rows(path):
        line = row[LINE]
        if not row.get("score"):
            continue
        key = (row["student"], row.get("question", ""))
        if key not in waiting:
            if _automatic(row):
                continue  # the 0 of a blank answer whose notebook is now unreadable
            raise WrittenError(
                f"{path}:{line}: no written answer of {row['student']!r} for "
                f"{row.get('question', '')!r} waits for a score in {lab} (an id changed by a "
                "spreadsheet, say 00123 to 123? a notebook now unreadable?): fix the line, "
                "or empty its score"
            )
        points, result = waiting[key]
        if _automatic(row) and _answer(result, key[1])[0] != BLANK:
            continue  # answered since it was scored 0: waiting for a person again
        if not _automatic(row) and _changed(shown, key[0], key[1], _digest(result, key[1])):
            changed.append(f"{path}:{line}: {key[0]} ({key[1]})")
            continue
        if row["score"].isdigit() and row.get("comment", "").isdigit():
            raise WrittenError(
                f"{path}:{line}: the score {row['score']!r} and the comment "
                f"{row['comment']!r} read like {row['score']},{row['comment']} with a decimal "
                f"comma: write {row['score']}.{row['comment']} (a comment of digits alone "
                "is refused)"
            )
        try:
            score = float(row["score"])
        except ValueError:
            score = math.nan
        if not 0 <= score <= points:
            raise WrittenError(
                f"{path}:{line}: the score {row['score']!r} of {row['student']} for {key[1]} "
                f"is not a number from 0 to {points:g}"
            )
        if key in lines:
            raise WrittenError(
                f"{path}:{line}: {row['student']} has a score for {key[1]} on line "
                f"{lines[key]} already: keep one"
            )
        lines[key] = line
        found[key] = (score, row.get("comment", ""))
    if changed and strict:
        raise WrittenError(
            f"{len(changed)} written answer(s) changed since they were scored (a notebook "
            f"graded again): {'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}. Run "
            "`written` again: it puts those scores back to waiting (the old score kept in the "
            "comment) and shows the new answers"
        )
    return found


def with_hand_scores(out: Path, results: list[dict], strict: bool = True) -> list[dict]:
    """``results`` (copies where changed) with the scores of each lab's scores file added:
    each scored written answer becomes an ``ok`` row with that score, and the result's score
    and status follow."""
    scored = {}
    for lab in sorted({r["lab"] for r in results}):
        scored[lab] = hand_scores(out, lab, [r for r in results if r["lab"] == lab], strict)
    updated = []
    for result in results:
        given = scored.get(result["lab"], {})
        if not any((result["student"], row["question"]) in given for row in result["rows"]):
            updated.append(result)
            continue
        result = copy.deepcopy(result)
        for row in result["rows"]:
            key = (result["student"], row["question"])
            if row["status"] == "manual" and key in given:
                score, comment = given[key]
                row["score"], row["status"] = score, "ok"
                row["message"] = "graded by hand" + (f": {comment}" if comment else "")
        statuses = {row["status"] for row in result["rows"]}
        if result.get("changes"):
            statuses.add("tampered")
        result["score"] = sum(float(row["score"]) for row in result["rows"])
        result["status"] = next(s for s in STATUS_ORDER if s in statuses or s == "ok")
        updated.append(result)
    return updated
