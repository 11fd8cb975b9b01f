"""Small HTML building blocks for the report: escaping, tables, figures, the page.

Everything is written by hand (no template engine); every piece of user text
(site, species and covariate names, formulas) goes through :func:`esc`.
"""
import base64
import html
import io
import math
import numbers

import numpy as np
import pandas as pd

CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --accent: #2a6f97; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0; background: #fff; line-height: 1.5; font-size: 15px; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 8px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line);
     color: var(--accent); }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.sub { color: var(--muted); margin: 0 0 12px; }
nav { background: var(--bg); padding: 8px 14px; border-radius: 6px; font-size: 14px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: right;
         vertical-align: top; white-space: nowrap; }
th { background: var(--bg); font-weight: 600; }
td.l, th.l { text-align: left; }
tr.best td { background: #e3f2e8; font-weight: 600; }
td.sig { font-weight: 700; }
.kv td:first-child { text-align: left; color: var(--muted); }
.kv td { text-align: left; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.ok { color: #1b7a3d; font-weight: 600; }
.warn { color: #b45309; font-weight: 600; }
.box { background: var(--bg); border-left: 4px solid var(--accent); padding: 8px 14px; margin: 10px 0; }
.problem { border-left-color: #b45309; }
.unavailable { background: #fff4e5; border-left: 4px solid #b45309; padding: 8px 14px; }
.methods { background: var(--bg); padding: 12px 16px; border-radius: 6px; text-align: justify; }
details { margin: 6px 0 12px; }
summary { cursor: pointer; color: var(--accent); }
.scroll { overflow-x: auto; max-width: 100%; }
.tall { max-height: 460px; overflow-y: auto; border: 1px solid var(--line); }
.tall table { margin: 0; }
.tall thead th { position: sticky; top: 0; }
.careful { background: #fff8e6; border-left: 4px solid #b45309; padding: 8px 16px; margin: 14px 0; }
.careful ul { margin: 4px 0; padding-left: 20px; }
.careful li { margin: 3px 0; }
.note { color: var(--muted); font-size: 13px; }
.flag { color: #b45309; }
.row { display: flex; flex-wrap: wrap; gap: 8px 36px; align-items: flex-start; }
.row > * { flex: 0 1 auto; min-width: 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def esc(text):
    """HTML-escape any value (labels, messages, formulas)."""
    return html.escape(str(text), quote=True)


def num(value, sig=3):
    """A number as people write it: ``sig`` significant digits, at most 3 decimals,
    powers of ten beyond 1e5 or below 1e-3, NaN as an en dash, integers as integers."""
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return "&ndash;"
    if math.isinf(v):
        return "&infin;" if v > 0 else "&minus;&infin;"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        mant, exp = f"{v:.{max(sig - 2, 0)}e}".split("e")
        return f"{mant}e{int(exp)}"
    dec = min(3, max(0, sig - 1 - int(math.floor(math.log10(a)))))
    return f"{v:.{dec}f}"


def fixed(value):
    """A number with decimals by size: 2 below 10, 1 below 100, none below 1e5, else a power of ten."""
    if value is None or not np.isfinite(value):
        return num(value)
    a = abs(float(value))
    if a >= 1e5:
        return num(value)
    dec = 2 if a < 10 else (1 if a < 100 else 0)
    out = f"{float(value):.{dec}f}"
    return "0.00" if out == "-0.00" else out


def interval(est, lo, hi, sig=None):
    """'estimate [lower, upper]' (:func:`fixed`, or :func:`num` with ``sig``); a dash when missing."""
    f = fixed if sig is None else (lambda v: num(v, sig))
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{f(est)} [&ndash;]"
    return f"{f(est)} [{f(lo)}, {f(hi)}]"


def prevalence(value):
    """A share as a fixed two-decimal number."""
    return "&ndash;" if value is None or not np.isfinite(value) else f"{float(value):.2f}"


def fmt(value, digits=3):
    """Format one table cell: numbers by :func:`num` (``digits`` significant), NaN as an en dash."""
    if isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, (bool, np.bool_)):
        if isinstance(value, numbers.Integral):
            return str(int(value))
        return num(value, digits)
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return esc(value)


def p_value(p):
    """A p-value as text (``<0.001`` for small ones)."""
    if p is None or not np.isfinite(p):
        return "&ndash;"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


DASH_NOTE = "&ndash; not available (for example a standard error the Hessian does not give)."


def table(df, index=True, digits=3, formatters=None, row_class=None, cls=None, max_rows=None,
          left=(), tall=False, more=None, dash_note=DASH_NOTE):
    """An HTML table from a DataFrame.

    Parameters
    ----------
    df : DataFrame
    index : bool
        Show the index as the first column(s).
    digits : int
        Significant digits of floats (:func:`num`).
    formatters : dict, optional
        Column name -> function(value) -> HTML string.
    row_class : callable, optional
        Function(row label) -> CSS class of the row (or None).
    cls : str, optional
        CSS class of the table.
    max_rows : int, optional
        Show at most this many rows (a note says how many were left out and ``more``,
        where the rest are).
    left : sequence of str
        Columns to align left (text columns without a formatter always are).
    tall : bool
        Put the table in a scrolling box (long lists; the browser's find searches it).
    more : str, optional
        Where the full table is (HTML), said when rows are left out.
    dash_note : str or None
        Footnote shown when a cell is an en dash.
    """
    formatters = formatters or {}
    shown = df if max_rows is None else df.iloc[:max_rows]
    names = list(df.index.names) if index else []
    head = "".join(f'<th class="l">{esc("" if n is None else n)}</th>' for n in names)
    left_cols = {c for c in df.columns if c not in formatters and isinstance(df[c], pd.Series)
                 and not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    left_cols |= set(left)
    lcls = ' class="l"'
    head += "".join(f"<th{lcls if c in left_cols else ''}>{esc(c)}</th>" for c in df.columns)
    rows = []
    for label, values in shown.iterrows():
        cells = ""
        if index:
            labels = label if isinstance(label, tuple) else (label,)
            cells += "".join(f'<td class="l">{esc(x)}</td>' for x in labels)
        for col, val in values.items():
            f = formatters.get(col)
            cells += f"<td{lcls if col in left_cols else ''}>{f(val) if f else fmt(val, digits)}</td>"
        rc = row_class(label) if row_class else None
        rows.append(f'<tr class="{rc}">{cells}</tr>' if rc else f"<tr>{cells}</tr>")
    body = "".join(rows)
    notes = []
    if max_rows is not None and len(df) > max_rows:
        notes.append(f"Showing {max_rows} of {len(df)} rows" + (f"; {more}" if more else "") + ".")
    if dash_note and "&ndash;" in body:
        notes.append(dash_note)
    c = f' class="{cls}"' if cls else ""
    wrap = "scroll tall" if tall else "scroll"
    foot = "".join(f'<p class="note">{n}</p>' for n in notes)
    return (f'<div class="{wrap}"><table{c}><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>{foot}')


def key_values(pairs):
    """A two-column table of (label, value-HTML) pairs."""
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def figure_of(obj):
    """The matplotlib Figure behind a plot function's return value (Figure, Axes, array of Axes)."""
    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "figure") and hasattr(obj.figure, "savefig"):
        return obj.figure
    arr = np.asarray(obj, dtype=object).ravel()
    if arr.size and hasattr(arr[0], "figure"):
        return arr[0].figure
    raise TypeError(f"expected a matplotlib Figure or Axes, got {type(obj).__name__}")


def png_data_uri(fig, dpi=100):
    """Render a Figure (or the Figure of an Axes) to PNG and return a ``data:image/png;base64,...`` URI; closes the figure."""
    import matplotlib.pyplot as plt

    fig = figure_of(fig)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig, alt, caption=None, dpi=100, width=None):
    """A ``<figure>`` with the embedded PNG of ``fig`` and an optional caption."""
    fstyle = f' style="width:{int(width)}px;max-width:100%"' if width else ""
    istyle = ' style="width:100%"' if width else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure{fstyle}><img src="{png_data_uri(fig, dpi)}" alt="{esc(alt)}"{istyle}>'
            f"{cap}</figure>")


def section(sid, title, body):
    """A report section with an anchor id."""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title, subtitle, nav, sections, footer):
    """The whole self-contained HTML document."""
    links = "".join(f'<a href="#{esc(sid)}">{esc(name)}</a>' for sid, name in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"jsdm\">\n<title>{esc(title)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p></header>\n"
        f"<nav>{links}</nav>\n" + "\n".join(sections) +
        f"\n<footer>{footer}</footer>\n</main>\n</body>\n</html>\n"
    )


def as_frame(obj):
    """A DataFrame from a DataFrame, Series or an object with ``to_frame()`` / ``frame``."""
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, pd.Series):
        return obj.to_frame()
    for attr in ("table", "frame", "to_frame"):
        val = getattr(obj, attr, None)
        val = val() if callable(val) else val
        if isinstance(val, pd.DataFrame):
            return val
    return pd.DataFrame(obj)


def row(*parts):
    """Place blocks side by side (wrapping on narrow screens)."""
    return '<div class="row">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"
