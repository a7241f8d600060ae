"""The grader's CSV cells (``autograder.tables``): can a spreadsheet take any of them for a
formula, and does every text come back as it was written? Brute force over every short text
made of the characters that matter."""

from __future__ import annotations

import csv
import io
import itertools

from autograder.tables import csv_text, from_spreadsheet, number, spreadsheet_safe

# the characters that start formulas, quote, separate cells or end lines, and a plain one
ALPHABET = ["=", "+", "-", "@", "\t", "\r", "\n", "'", '"', ",", " ", "a"]
TEXTS = ["".join(t) for n in range(4) for t in itertools.product(ALPHABET, repeat=n)]
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def test_every_text_comes_back_as_it_was_and_two_texts_stay_two():
    rows = [[text, "x"] for text in TEXTS]
    written = csv_text(["student", "other"], rows)
    read = list(csv.reader(io.StringIO(written, newline="")))
    assert len(read) == len(TEXTS) + 1  # no text breaks its row
    assert [from_spreadsheet(row[0]) for row in read[1:]] == TEXTS
    assert len({spreadsheet_safe(text) for text in TEXTS}) == len(TEXTS)


def test_no_cell_starts_like_a_formula_however_line_ends_are_read():
    """A spreadsheet ends a line at CR, LF or CRLF outside quotes: read so, every row has its
    two cells and no cell starts like a formula."""
    written = csv_text(["student", "other"], [[text, "=1+1"] for text in TEXTS])
    for row in csv.reader(io.StringIO(written, newline=None)):  # universal newlines
        assert len(row) == 2, row
        assert not any(cell.startswith(FORMULA) for cell in row), row


def test_numbers_are_written_as_a_person_would():
    assert [number(v) for v in (3.0, 2.5, 1 / 3, 0.0, 10)] == ["3", "2.5", "0.333", "0", "10"]
