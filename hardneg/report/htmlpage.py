"""Small HTML building blocks for the report: escaped cells, tables, images as data URIs, one page.

Use them to write a page that a person opens from disk and that never reaches the network:
every text goes through :func:`esc`, images are embedded (:func:`img`), the style is inline
and a Content-Security-Policy forbids any fetch. No templating engine, no JavaScript.
"""
from __future__ import annotations

import base64
import html
import re
from typing import Any, Iterable, Sequence

__all__: list[str] = []  # internal: the HTML reports' building blocks

# The page may only show inline styles and data: images; nothing is ever fetched.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1100px; margin: 0 auto; padding: 1.2em 1.5em 4em; background: #fff; }
h1 { font-size: 1.5em; margin: .2em 0 .4em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; } h3 { font-size: 1.02em; margin: 1.2em 0 .4em; }
nav a { margin-right: 1em; color: #2a6db0; text-decoration: none; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sig { font-weight: 600; color: #0b6b2e; } .ci { color: #777; font-size: 11px; display: block; }
.note { color: #666; font-style: italic; } .muted { color: #888; }
.text { max-width: 640px; } code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
details { margin: .3em 0; } details.query { border: 1px solid #e2e2e2; border-radius: 4px; padding: .3em .6em; }
details.query > summary { cursor: pointer; } details details { margin-left: .8em; }
img { max-width: 100%; height: auto; display: block; margin: .4em 0 1em; }
"""


def esc(value: Any) -> str:
    """Text as HTML-safe text (``<``, ``>``, ``&`` and both quotes escaped). Use it on every value."""
    return html.escape("" if value is None else str(value), quote=True)


def truncate(text: str | None, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut (before escaping)."""
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          raw: Sequence[int] = ()) -> str:
    """A table; cells are escaped except the column indexes in ``raw`` (already HTML).

    ``numeric`` columns are right-aligned.
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{cell if i in raw else esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying the PNG itself as a base64 data URI (no file, no network)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def details(summary: str, body: str, cls: str = "") -> str:
    """A collapsible block; ``summary`` and ``body`` are HTML."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<details{attr}><summary>{summary}</summary>{body}</details>"


_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def markdown(text: str) -> str:
    """The little Markdown a benchmark table file holds, as HTML: pipe tables, ``#`` headings,
    other lines as paragraphs. Everything is escaped; no links or inline markup are interpreted."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1].strip()):
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(table(_cells(line), rows))
            continue
        if line.startswith("#"):
            out.append(f"<h3>{esc(line.lstrip('#').strip())}</h3>")
        elif line:
            out.append(f"<p>{esc(line)}</p>")
        i += 1
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    """The cells of one pipe-table line (escaped pipes ``\\|`` stay inside a cell)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(anchor, heading, body HTML)``, linked from a nav bar."""
    nav = " ".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    parts = [f'<section id="{esc(a)}"><h2>{esc(h)}</h2>\n{body}\n</section>' for a, h, body in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n<nav>{nav}</nav>\n" + "\n".join(parts) + "\n</body>\n</html>\n")
