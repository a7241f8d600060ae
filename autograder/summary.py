"""The class at a glance: ``DIR/summary/<lab>.html``, one page per lab graded into DIR.

For the instructor, from the stored results (never handed out: it names students): how many
students and with which status, the totals' spread (a histogram), and per graded cell its
mean score, how many got full marks, how many were stopped (error, timeout, tampered,
unreadable) and the messages of the commonest failures, which show a common mistake, or a
test that is too strict, at once. Students whose submission was unreadable, errored, timed
out or was tampered with are listed with a link to their feedback page.

``python -m autograder grade`` writes it after every batch, and ``export`` again with the
scores a person gave the written answers (``autograder.written``), as it does the feedback
pages; ``grade`` keeps those scores too once a scores file exists (before, written answers
are "waiting for a person"). An unreadable notebook, or one the grader failed on, is counted
by status only: none of its cells counts as scored. The figure is drawn with matplotlib (Agg, no display) and embedded
in the page, so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grade import STATUS_ORDER, feedback_path
from autograder.tables import number, write_text_atomic

# Statuses that mean a cell was not scored on its merits (``grades.csv``'s status column).
STOPPED = ("unreadable", "error", "timeout", "tampered")
TOP_MESSAGES = 3  # the commonest failure messages shown per cell
MESSAGE_CHARS = 200  # a message's first line is cut here before messages are counted


@dataclass
class Question:
    """One graded cell across the class."""

    name: str
    points: float
    scores: list[float] = field(default_factory=list)  # of the notebooks read, not waiting
    waiting: int = 0  # written answers not scored by a person yet
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # message -> students who lost points

    @property
    def full_marks(self) -> int:
        return sum(score >= self.points for score in self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores) if self.scores else 0.0


@dataclass
class LabSummary:
    """One lab's results, gathered (``gather``)."""

    lab: str
    max_score: float
    totals: dict[str, float]  # student -> total
    statuses: dict[str, str]  # student -> the submission's status
    questions: list[Question]


def _first_line(message: str) -> str:
    line = (message.strip().splitlines() or [""])[0]
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


def gather(lab: str, results: list[dict]) -> LabSummary:
    """``lab``'s results (those of other labs are left out) as one ``LabSummary``; the cells
    in notebook order (the union over students, first seen first)."""
    results = sorted((r for r in results if r["lab"] == lab), key=lambda r: r["student"])
    questions: dict[str, Question] = {}
    for result in results:
        # an unreadable notebook, or one the grader failed on, has no cell scored on its
        # merits: its rows are counted by status, and out of the scores and the failures
        read = result["status"] != "unreadable" and not result.get("internal_error")
        for row in result["rows"]:
            question = questions.setdefault(
                row["question"], Question(row["question"], float(row["max_score"]))
            )
            question.statuses[row["status"]] += 1
            if row["status"] == "manual":
                question.waiting += 1
                continue
            if not read:
                continue
            score = float(row["score"])
            question.scores.append(score)
            if score < question.points:
                question.failures[_first_line(str(row.get("message", "")))] += 1
    return LabSummary(
        lab=lab,
        max_score=max((float(r["max_score"]) for r in results), default=0.0),
        totals={r["student"]: float(r["score"]) for r in results},
        statuses={r["student"]: r["status"] for r in results},
        questions=list(questions.values()),
    )


def _figure(summary: LabSummary) -> str:
    """The totals' histogram and each cell's share of full marks, as a PNG data URI."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 0.3 * len(summary.questions) + 3), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.3])
    top = summary.max_score or 1.0
    left.hist(list(summary.totals.values()), bins=20, range=(0, top), color="#4c72b0")
    left.set_xlabel(f"total (out of {number(summary.max_score)})")
    left.set_ylabel("students")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title(f"{summary.lab}: totals of {len(summary.totals)} students")
    questions = summary.questions[::-1]  # the first cell at the top
    shares = [q.full_marks / len(q.scores) * 100 if q.scores else 0 for q in questions]
    bars = right.barh([q.name for q in questions], shares, color="#55a868")
    labels = [
        f"{share:.0f}%" if q.scores else "waiting for a person" if q.waiting else "none scored"
        for q, share in zip(questions, shares, strict=True)
    ]
    right.bar_label(bars, labels=labels, fontsize=8, padding=2)
    right.set_xlim(0, 100)
    right.set_xlabel("students with full marks (%)")
    right.set_title("each graded cell")
    right.tick_params(axis="y", labelsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_STYLE = (
    "<style>body{font-family:sans-serif;max-width:75em;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:left;vertical-align:top}td.n{text-align:right}ul{margin:0;padding-left:1.2em}"
    "img{max-width:100%}</style>"
)


def page(summary: LabSummary) -> str:
    """The summary page's HTML (students' ids and messages escaped)."""
    totals = list(summary.totals.values())
    count = Counter(summary.statuses.values())
    lab = html.escape(summary.lab)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{lab}: class summary</title>"
        f"{_STYLE}</head><body><h1>{lab}: class summary</h1>",
        "<p>For the instructor: it names students. Written answers count as scored by a person "
        "once <code>export</code> has added their scores, and as 0 before.</p>",
    ]
    if totals:
        parts.append(
            f"<p>{len(totals)} students; totals out of {number(summary.max_score)}: mean "
            f"{number(statistics.fmean(totals))}, median {number(statistics.median(totals))}, "
            f"lowest {number(min(totals))}, highest {number(max(totals))}. Status: "
            + ", ".join(f"{s} {count[s]}" for s in STATUS_ORDER if count[s])
            + ".</p>"
        )
        parts.append(f"<img alt='totals and full marks per cell' src='{_figure(summary)}'>")
    parts.append(
        "<h2>Each graded cell</h2><table><tr><th>cell</th><th>points</th><th>mean</th>"
        "<th>full marks (of those scored)</th><th>not scored on its merits</th><th>commonest failures "
        "(students)</th></tr>"
    )
    for question in summary.questions:
        stopped = [f"{s} {question.statuses[s]}" for s in STOPPED if question.statuses[s]]
        if question.waiting:
            stopped.append(f"waiting for a person {question.waiting}")
        failures = "".join(
            f"<li>{html.escape(message or '(no message)')} ({n})</li>"
            for message, n in question.failures.most_common(TOP_MESSAGES)
        )
        parts.append(
            f"<tr><td>{html.escape(question.name)}</td><td class='n'>{number(question.points)}"
            f"</td><td class='n'>{number(question.mean) if question.scores else '-'}</td>"
            f"<td class='n'>{f'{question.full_marks} of {len(question.scores)}' if question.scores else '-'}"
            f"</td><td>{html.escape(', '.join(stopped))}</td>"
            f"<td>{f'<ul>{failures}</ul>' if failures else ''}</td></tr>"
        )
    parts.append("</table>")
    for status in STOPPED:
        students = sorted(s for s, st in summary.statuses.items() if st == status)
        if not students:
            continue
        links = ", ".join(
            f"<a href='{html.escape(feedback_path(Path('..'), s, summary.lab).as_posix())}'>"
            f"{html.escape(s)}</a>"
            for s in students
        )
        parts.append(f"<h2>Status {status} ({len(students)})</h2><p>{links}</p>")
    parts.append("</body></html>")
    return "".join(parts)


def summary_path(out: Path, lab: str) -> Path:
    return Path(out) / "summary" / f"{lab}.html"


def write_summaries(out: Path, results: list[dict]) -> list[Path]:
    """Write the summary page of each lab of ``results``; returns the pages written."""
    written = []
    for lab in sorted({r["lab"] for r in results}):
        path = summary_path(out, lab)
        write_text_atomic(path, page(gather(lab, results)))
        written.append(path)
    return written


def headline(summary: LabSummary) -> str:
    """One line for the terminal: the median total and the cell fewest students got right."""
    if not summary.totals:
        return f"{summary.lab}: no students"
    scored = [q for q in summary.questions if q.scores]
    line = (
        f"{summary.lab}: median total {number(statistics.median(summary.totals.values()))} "
        f"of {number(summary.max_score)}"
    )
    if scored:
        hardest = min(scored, key=lambda q: q.full_marks / len(q.scores))
        line += (
            f"; fewest full marks: {hardest.name} ({hardest.full_marks} of "
            f"{len(hardest.scores)} students)"
        )
    return line
