"""Feedback pages that show the student's work and the grader's notes, and run nothing of the student's.

A feedback page (nbgrader's ``generate_feedback``) and formgrader's view of a submission render the
student's notebook in the instructor's browser. What the student's code printed is already plain
text (:mod:`autograde.kernel`); what the student wrote in markdown is made inert here:

- :func:`inert_markdown` escapes HTML in the student's markdown cells (``<script>``, ``<img
  onerror>``: shown as text) and points links and images whose scheme is not http, https or mailto
  (``javascript:``, in any case) nowhere, in the autograded notebook itself, so formgrader renders
  it safely too;
- :func:`sanitize_page` cleans the body of every feedback page with bleach (an allow-list of tags,
  attributes and URL schemes), as a second line;
- :func:`add_notes` and :func:`write_problem_page` write the grader's own words, escaped.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import bleach
from bs4 import BeautifulSoup

SAFE_SCHEMES = ("http", "https", "mailto")
SAFE_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
})
SAFE_ATTRIBUTES = {"*": ["class", "id", "title"], "a": ["href", "title"], "img": ["src", "alt", "title", "width",
                                                                                   "height"],
                   "td": ["colspan", "rowspan", "align"], "th": ["colspan", "rowspan", "align"]}
_LINK = re.compile(r"(\]\(\s*<?)([^)\s>]*)")  # [text](url) and ![alt](url)
_REFERENCE = re.compile(r"^(\s{0,3}\[[^\]]+\]:\s*<?)(\S+)", re.MULTILINE)  # [id]: url
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
BLOCKED = "#link-removed-by-the-grader"


def _safe_url(url: str) -> str:
    compact = "".join(c for c in url if c.isprintable() and not c.isspace())
    scheme = _SCHEME.match(compact)
    return url if scheme is None or scheme.group(1).lower() in SAFE_SCHEMES else BLOCKED


def inert_markdown(source: str) -> str:
    """``source`` with its HTML escaped and every link or image of an unsafe scheme pointing nowhere."""
    escaped = source.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = _LINK.sub(lambda m: m.group(1) + _safe_url(m.group(2)), escaped)
    return _REFERENCE.sub(lambda m: m.group(1) + _safe_url(m.group(2)), escaped)


def make_markdown_inert(notebook, instructors: set[str]) -> None:
    """Apply :func:`inert_markdown` to every markdown cell that is not the instructor's, word for word."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.strip() not in instructors:
            cell.source = inert_markdown(cell.source)
        cell.pop("attachments", None)


def sanitize_page(page: Path) -> None:
    """Clean a feedback page's body: only :data:`SAFE_TAGS`, :data:`SAFE_ATTRIBUTES` and safe URL schemes."""
    if not page.is_file():
        return
    soup = BeautifulSoup(page.read_text(errors="replace"), "html.parser")
    if soup.body is None:
        return
    clean = bleach.clean(soup.body.decode_contents(), tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES,
                         protocols=list(SAFE_SCHEMES), strip=True, strip_comments=True)
    soup.body.clear()
    soup.body.append(BeautifulSoup(clean, "html.parser"))
    page.write_text(str(soup))


def add_notes(page: Path, notes: list[str]) -> None:
    """Say at the top of a feedback page what happened to the submission on the way (restored cells, ...)."""
    if not notes or not page.is_file():
        return
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    box = (f'<div class="grader-notes" style="border:2px solid #c60;padding:0.5em 1em;margin:1em">'
           f"<b>Notes from the grader</b><ul>{items}</ul></div>")
    text = page.read_text()
    body = re.search(r"<body[^>]*>", text)
    page.write_text(text[:body.end()] + box + text[body.end():] if body else box + text)


def write_problem_page(page: Path, lesson: str, reason: str, max_score: float) -> None:
    """A feedback page for a submission that could not be graded, so every student gets one."""
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Feedback: "
        f"{html.escape(lesson)}</title></head><body>\n"
        f"<h1>{html.escape(lesson)}: 0 / {max_score:g}</h1>\n"
        f"<p>Your submission could not be graded: {html.escape(reason)}.</p>\n"
        "<p>Check the file you handed in, then ask your instructor to grade it again.</p>\n</body></html>\n")
