"""Every table the CLIs print: cell formatting, alignment, markdown, and fitting a terminal's width.

One room for table formatting (results show/query, leaderboards, scaling fits, the MAD table, plan,
models): what a table shows is decided by its command; how it looks is decided here.

    table(headers, rows)                          aligned plain text (numbers right-aligned)
    table(headers, rows, markdown=True)           a GitHub markdown table
    frame_text(df, columns=None, width=None)      a pandas frame: empty columns dropped, long text cut,
                                                  columns that do not fit the width left out (and said)
No dependency beyond the standard library (pandas only when a frame is passed in).
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
from collections.abc import Sequence
from typing import Any

# Lazy here: pandas (optional or slow to import: only the paths that use them)

DEFAULT_WIDTH = 120  # when the output is not a terminal
MIN_CELL = 12        # a text column is never cut below this many characters to make room
GAP = "  "


def is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:  # pandas NA / NaT
        import pandas as pd  # noqa: PLC0415

        return bool(pd.isna(v)) if not isinstance(v, (str, bytes, list, tuple, dict)) else False
    except (ImportError, TypeError, ValueError):
        return False


def fmt(v, digits: int = 4) -> str:
    """One value as text: '-' when missing, floats to `digits` significant digits, ints with thousands
    separators, timestamps to the minute."""
    if is_missing(v):
        return "-"
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if 1e3 <= abs(v) < 1e12 else f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,}"
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _numeric(cells: Sequence[str]) -> bool:
    vals = [c for c in cells if c not in ("-", "")]
    return bool(vals) and all(_looks_numeric(c) for c in vals)


def _looks_numeric(s: str) -> bool:
    t = s.replace(",", "").rstrip("%KMBTx").lstrip("~<=")
    try:
        float(t)
    except ValueError:
        return False
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence], markdown: bool = False,
          right: Sequence[bool] | None = None) -> str:
    """Rows of values (formatted with fmt unless already str) under `headers`. `right`: per-column
    right alignment (default: columns whose cells all look like numbers)."""
    cells = [[v if isinstance(v, str) else fmt(v) for v in r] for r in rows]
    heads = [str(h) for h in headers]
    if right is None:
        right = [_numeric([r[i] for r in cells]) for i in range(len(heads))]
    if markdown:
        esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in heads) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in cells])
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]

    def line(vals):
        return GAP.join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(vals, widths, right)).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(r) for r in cells])


def terminal_width(default: int = DEFAULT_WIDTH) -> int:
    """Columns of the terminal on stdout (COLUMNS wins), `default` when stdout is not a terminal."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        if os.isatty(1):
            return shutil.get_terminal_size((default, 24)).columns
    except (OSError, ValueError):
        pass
    return default


def cut(s: str, n: int) -> str:
    """`s` on one line, at most n characters ('...' marks a cut)."""
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: max(n - 3, 1)] + "..."


def fit(headers: list[str], cells: list[list[str]], width: int, keep: int = 1,
        cuttable: dict[str, int] | None = None, drop_order: Sequence[str] | None = None, drop_first: int = 0
        ) -> tuple[list[str], list[list[str]], list[str]]:
    """Make a table of string cells fit `width`: leave out the first `drop_first` columns of `drop_order`,
    then cut the columns in `cuttable` (name -> shortest width), widest first, then leave out the rest
    of `drop_order` (default: from the right); the first `keep` columns always stay. Returns
    (headers, cells, left-out headers)."""
    headers, cells = list(headers), [list(r) for r in cells]
    cuttable = cuttable or {}
    order = [h for h in (drop_order if drop_order is not None else headers[::-1]) if h in headers[keep:]]
    dropped: list[str] = []

    def widths():
        return [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    while headers:
        ws = widths()
        over = sum(ws) + len(GAP) * (len(ws) - 1) - width
        if over <= 0:
            break
        cands = [i for i, h in enumerate(headers) if h in cuttable and ws[i] > max(cuttable[h], len(h))]
        if cands and len(dropped) >= drop_first:
            i = max(cands, key=lambda j: ws[j])
            target = max(cuttable[headers[i]], len(headers[i]), ws[i] - over)
            for r in cells:
                r[i] = cut(r[i], target)
            continue
        if not order:
            if cands:
                drop_first = 0
                continue
            break
        i = headers.index(order.pop(0))
        dropped.append(headers.pop(i))
        for r in cells:
            r.pop(i)
    return headers, cells, dropped


def frame_text(df, columns: Sequence[str] | None = None, *, width: int | None = None, markdown: bool = False,
               drop_empty: bool = True, formats: dict[str, Any] | None = None, keep: int = 1,
               cuttable: dict[str, int] | None = None, drop_order: Sequence[str] | None = None) -> str:
    """A pandas frame as a table: `columns` (default: all) in that order, all-empty columns dropped,
    cells formatted (fmt, or `formats[col](value)`), fitted to `width` (None: no limit; see fit for
    `keep`, `cuttable`, `drop_order`). A line under the table names the columns left out."""
    cols = [c for c in (columns if columns is not None else list(df.columns)) if c in df.columns]
    if drop_empty:
        cols = [c for c in cols if not all(is_missing(v) for v in df[c])]
    formats = formats or {}
    cells = [[formats[c](v) if c in formats and not is_missing(v) else fmt(v) for c, v in zip(cols, rec)]
             for rec in df[cols].itertuples(index=False)] if cols else []
    cells = [[c.replace("\n", " ") for c in r] for r in cells]
    dropped: list[str] = []
    if width is not None and not markdown:
        cols, cells, dropped = fit(cols, cells, width, keep=keep, cuttable=cuttable, drop_order=drop_order)
    text = table(cols, cells, markdown=markdown) if cols else "(no columns)"
    if dropped:
        text += f"\n({len(dropped)} more column{'s' if len(dropped) != 1 else ''} did not fit: {', '.join(dropped)}; " \
                "a wider terminal or --columns shows them)"
    return text


__all__ = ["DEFAULT_WIDTH", "cut", "fit", "fmt", "frame_text", "is_missing", "table", "terminal_width"]
