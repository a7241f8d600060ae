"""The grader's CSV tables and files: scores as the tables show them, cells a spreadsheet
cannot take for formulas, files replaced whole (a reader never sees half a file).

Light to import (no nbconvert): the command line, ``export`` and ``written`` use it."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

GRADE_COLUMNS = ("student", "lab", "question", "score", "max_score", "status")
TOTAL_COLUMNS = ("student", "lab", "score", "max_score", "status")


def number(value: float) -> str:
    """A score as the CSV shows it: ``3`` rather than ``3.0``, else up to 3 decimals."""
    value = round(float(value), 3)
    return str(int(value)) if value == int(value) else f"{value:g}"


# A CSV cell starting with one of these is a formula to a spreadsheet (CSV injection): a
# student id taken from a file name such as "=HYPERLINK(...).ipynb" would run in Excel.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTED = _FORMULA_START + ("'",)  # a cell starting with ' is prefixed too: reversible


def spreadsheet_safe(value: object) -> str:
    """A CSV cell as written: text starting like a formula gets a leading ``'``, which
    spreadsheets show as text (OWASP's advice on CSV injection), and so does text starting
    with ``'`` (so that ``'-x`` and ``-x`` stay two cells); ``from_spreadsheet`` undoes it."""
    text = str(value)
    return "'" + text if text.startswith(_QUOTED) else text


def from_spreadsheet(text: str) -> str:
    """A CSV cell as read back (the inverse of ``spreadsheet_safe``)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(_QUOTED) else text


def csv_text(header: list[str] | tuple[str, ...], rows) -> str:
    """A CSV file's text: the header, then the rows, every cell ``spreadsheet_safe``. Lines
    end in ``\n``; a row with a carriage return in a cell has every cell quoted (the csv
    module quotes only the line terminator's characters, and a bare CR ends a line for a
    spreadsheet)."""
    text = io.StringIO()
    plain = csv.writer(text, lineterminator="\n")
    quoted = csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in [header, *rows]:
        cells = [spreadsheet_safe(value) for value in row]
        (quoted if any("\r" in cell for cell in cells) else plain).writerow(cells)
    return text.getvalue()


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _line(result: dict, scored: dict, *middle: str) -> list[str]:
    """A row of ``grades.csv`` (``scored`` a row of the result, ``middle`` its question) or of
    ``totals.csv`` (``scored`` the result itself)."""
    score, most = number(scored["score"]), number(scored["max_score"])
    return [result["student"], result["lab"], *middle, score, most, scored["status"]]


def write_csvs(out: Path, results: list[dict]) -> None:
    """Write ``grades.csv`` (one row per question per student) and ``totals.csv``."""
    results = sorted(results, key=lambda r: (r["student"], r["lab"]))
    grades = [_line(result, row, row["question"]) for result in results for row in result["rows"]]
    totals = [_line(result, result) for result in results]
    write_text_atomic(Path(out) / "grades.csv", csv_text(GRADE_COLUMNS, grades))
    write_text_atomic(Path(out) / "totals.csv", csv_text(TOTAL_COLUMNS, totals))
