"""Tables for the reports: Markdown and HTML from one list of headers and rows of strings."""

from __future__ import annotations

import html


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table (``|`` in a cell is escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)]


def html_table(headers: list[str], rows: list[list[str]], *, markup: bool = False) -> str:
    """An HTML table; cells are escaped unless ``markup`` (the caller built them as HTML and escaped the text)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if markup else html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
