"""Per-student HTML feedback pages (the grade tables are ``autograder.tables``)."""

from __future__ import annotations

import copy
import html
import os
import select
import signal
import time
from pathlib import Path

import bleach
import jinja2
from nbconvert import HTMLExporter
from nbformat import v4

from autograder.execute import Execution
from autograder.notebooks import Lab, Restored, cell_kind, nbgrader_meta, strip_hidden
from autograder.tables import number, write_text_atomic

_STYLE = """
<style>
.autograder-summary { font-family: sans-serif; margin: 1em auto; max-width: 1100px; }
.autograder-summary table { border-collapse: collapse; }
.autograder-summary td, .autograder-summary th { border: 1px solid #bbb; padding: 4px 8px;
  text-align: left; vertical-align: top; }
.autograder-summary .ok { color: #176117; } .autograder-summary .bad { color: #9b1c1c; }
.autograder-summary pre { white-space: pre-wrap; margin: 0; }
</style>
"""


SUMMARY_START = '<div class="autograder-summary">'  # the score table's div holds no other div


def _summary_html(result: dict) -> str:
    lines = [
        SUMMARY_START,
        f"<h1>Feedback: {html.escape(result['lab'])}</h1>",
        f"<p>Student: <b>{html.escape(result['student'])}</b> &middot; score "
        f"<b>{number(result['score'])} / {number(result['max_score'])}</b> &middot; status "
        f"<b>{html.escape(result['status'])}</b> &middot; graded {html.escape(result['graded_at'])}"
        f" (profile {html.escape(result.get('profile', ''))})</p>",
        "<table><tr><th>question</th><th>score</th><th>status</th><th>message</th></tr>",
    ]
    for row in result["rows"]:
        good = row["score"] >= row["max_score"] and row["status"] != "manual"
        lines.append(
            f"<tr><td>{html.escape(row['question'])}</td>"
            f'<td class="{"ok" if good else "bad"}">{number(row["score"])} / '
            f"{number(row['max_score'])}</td><td>{html.escape(row['status'])}</td>"
            f"<td><pre>{html.escape(row['message'])}</pre></td></tr>"
        )
    lines.append("</table>")
    changes = result.get("changes") or {}
    if changes:
        lines.append("<h2>Cells you were not meant to change</h2><ul>")
        for grade_id, texts in changes.items():
            for text in texts:
                lines.append(f"<li>{html.escape(grade_id)}: <pre>{html.escape(text)}</pre></li>")
        lines.append("</ul><p>They were restored from the original and graded as restored.</p>")
    for note in result.get("notes", []):
        lines.append(f"<p>{html.escape(note)}</p>")
    lines.append("</div>")
    return "\n".join(lines)


def feedback_notebook(result: dict, lab: Lab, execution: Execution) -> object:
    """The executed notebook as the student may see it: test cells without hidden tests or
    outputs, each graded cell followed by its verdict."""
    notebook = copy.deepcopy(execution.notebook)
    rows = {row["question"]: row for row in result["rows"]}
    cells = []
    for cell in notebook.cells:
        kind = cell_kind(cell)
        if kind == "test":
            cell.source = strip_hidden(cell.source)
            cell.outputs = []
        cells.append(cell)
        meta = nbgrader_meta(cell)
        row = rows.get(str(meta["grade_id"])) if meta else None
        if row is not None and row["status"] == "manual":
            # scored later by a person: the table at the top is the one ``export`` refreshes
            points = number(row["max_score"])
            cells.append(
                v4.new_markdown_cell(
                    _escape_markdown(
                        f"**{row['question']}** (written answer, {points} points): graded by "
                        "a person; the table at the top of this page shows its score."
                    )
                )
            )
        elif row is not None:
            verdict = (
                f"**{row['question']}: {number(row['score'])} / {number(row['max_score'])}** "
                f"({row['status']}): {row['message']}"
            )
            cells.append(v4.new_markdown_cell(_escape_markdown(verdict)))
    notebook.cells = cells
    # Widget state is the student's: the exporter would embed it and load the widget manager
    # from a CDN, which renders it as live HTML (bleach never sees it).
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if isinstance(output.get("data"), dict):
                output["data"].pop(WIDGET_VIEW, None)
    return notebook


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RENDER_SECONDS = 60  # nbconvert on a student's notebook; normal pages take 1 to 3 s


def _escape_markdown(text: str) -> str:
    return html.escape(text).replace("\n", "  \n")


_ALLOWED_TAGS = frozenset(
    "a abbr b blockquote br code del details div em h1 h2 h3 h4 h5 h6 hr i img li ol p pre "
    "span strong sub summary sup table tbody td th thead tr ul".split()
)
_ALLOWED_ATTRIBUTES = {"*": ["class", "id", "title", "alt", "href", "src"]}


def _clean_html(element: object) -> str:
    """Student HTML (markdown and outputs) without scripts or event handlers."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(
        text,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        protocols={"http", "https", "mailto", "data"},
    )


# nbconvert's "lab" page without the scripts its template loads from cdnjs (require.js,
# MathJax, mermaid, the widget manager): a feedback page is static, opens offline and in an
# LMS that blocks scripts, and loads nothing from a third party when a student opens it.
# (Math in markdown shows as written, $...$.)
_FEEDBACK_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
_exporter: HTMLExporter | None = None


def _html_exporter() -> HTMLExporter:
    global _exporter
    if _exporter is None:
        _exporter = HTMLExporter(
            template_name="lab",
            template_file="feedback.html.j2",
            extra_loaders=[jinja2.DictLoader({"feedback.html.j2": _FEEDBACK_TEMPLATE})],
            sanitize_html=True,
            filters={"clean_html": _clean_html},
        )
    return _exporter


def write_feedback(
    path: Path,
    result: dict,
    lab: Lab,
    restored: Restored | None,
    execution: Execution | None,
) -> None:
    """Write one student's feedback page (scores, messages, their code and outputs)."""
    summary = _summary_html(result)
    body, why = None, ""
    if execution is not None:
        body, why = _render(feedback_notebook(result, lab, execution), RENDER_SECONDS)
    if body is None:
        note = (
            f"<p>Your notebook's cells cannot be shown here: {html.escape(why)}.</p>" if why else ""
        )
        page = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(lab.name)}"
            f"</title>{_STYLE}</head><body>{summary}{note}</body></html>"
        )
    else:
        marker = body.find(">", body.find("<body")) + 1
        page = body[:marker] + _STYLE + summary + body[marker:]
    write_text_atomic(Path(path), page)


def refresh_summary(path: Path, result: dict) -> bool:
    """Replace the score table at the top of a feedback page ``write_feedback`` wrote with
    ``result``'s (``export`` does, with the scores a person gave the written answers). The
    page's cells are kept as they are. False, and nothing written, when there is no page or
    it has no table."""
    try:
        page = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    # the table is the first thing after <body>, before any of the student's cells, and
    # holds no <div> of its own (its texts are escaped), so its end is the next </div>
    body = page.find("<body")
    start = page.find(SUMMARY_START, body) if body >= 0 else -1
    end = page.find("</div>", start) if start >= 0 else -1
    if end < 0:
        return False
    fresh = page[:start] + _summary_html(result) + page[end + len("</div>") :]
    if fresh != page:
        write_text_atomic(Path(path), fresh)
    return True


def _convert(notebook) -> tuple[str | None, str]:
    """nbconvert's HTML page of ``notebook``, or None and why it does not convert."""
    try:
        return _html_exporter().from_notebook_node(notebook)[0], ""
    except Exception as error:  # noqa: BLE001 (the student's notebook, not the grader)
        return None, f"it does not convert to HTML ({f'{type(error).__name__}: {error}'[:500]})"


def _render(notebook, seconds: float) -> tuple[str | None, str]:
    """nbconvert's HTML page of ``notebook``, or None and why: the notebook breaks nbconvert
    (it is the student's: any JSON that nbformat reads), or it takes longer than ``seconds``
    (student markdown can keep the markdown parser busy for hours: 200,000 ``[`` took 9
    minutes). Rendered in a forked child, killed at the deadline."""
    if not hasattr(os, "fork"):
        return _convert(notebook)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: render, send, leave without running the parent's clean-ups
        status = 3
        try:
            os.close(read)
            body, why = _convert(notebook)
            with os.fdopen(write, "wb") as stream:
                stream.write((why if body is None else body).encode())
            status = 3 if body is None else 0
        finally:
            os._exit(status)
    os.close(write)
    chunks, deadline, timed_out = [], time.monotonic() + seconds, False
    with os.fdopen(read, "rb") as stream:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([stream], [], [], left)[0]:
                continue
            chunk = stream.read1(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return text, ""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        return None, text
    if timed_out:
        return None, f"converting it to HTML took longer than {seconds:g} s"
    return None, f"the converter to HTML stopped (wait status {status})"
