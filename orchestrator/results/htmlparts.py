"""Small pieces shared by the report.html sections: escaping, digests, run files read leniently,
key/value cells, inline PNGs (data: URIs) and sortable tables (the page's script sorts every
``table.sortable`` by the ``data-v`` of its numeric cells)."""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any, Sequence

def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def short(value: Any, n: int = 12) -> str:
    """``sha256:0123...`` cut to ``n`` hex digits, the full value in a tooltip (escaped)."""
    if not value:
        return ""
    text = str(value)
    algo, _, digest = text.rpartition(":")
    shown = (f"{algo}:" if algo else "") + digest[:n] + ("…" if len(digest) > n else "")
    return f'<code title="{esc(text)}">{esc(shown)}</code>'


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def dict_of(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def kv(d: Any) -> str:
    """A dict as ``key value`` lines (values JSON when not plain), escaped."""
    if not isinstance(d, dict) or not d:
        return ""
    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return "<br>".join(f"{esc(k)} <code>{esc(text(v))}</code>" for k, v in d.items() if v not in (None, "", [], {}))


def png_uri(png: Path | bytes | None) -> str | None:
    """A PNG file (or its bytes) as a data: URI; None when there is none."""
    if png is None:
        return None
    data = png if isinstance(png, bytes) else Path(png).read_bytes() if Path(png).is_file() else None
    return None if data is None else "data:image/png;base64," + base64.b64encode(data).decode("ascii")


Cell = tuple[str, Any]  # (text shown, sort value: a number, or None for text and empty cells)


def sortable_table(table_id: str, headers: Sequence[str], numeric: Sequence[bool], rows: Sequence[Sequence[Cell]],
                   extra_class: str = "") -> str:
    """A ``<table class="sortable">`` with numeric cells sorted by value; every text escaped."""
    head = "".join(f'<th data-type="{"num" if n else "text"}">{esc(h)}</th>' for h, n in zip(headers, numeric))
    body = []
    for i, row in enumerate(rows):
        tds = []
        for (text, value), num in zip(row, numeric):
            if num:
                v = "" if value is None or value != value else repr(float(value))
                tds.append(f'<td class="num" data-v="{v}">{esc(text)}</td>')
            else:
                tds.append(f"<td>{esc(text)}</td>")
        body.append(f'<tr data-i="{i}">{"".join(tds)}</tr>')
    cls = f"sortable {extra_class}".strip()
    return (f'<div class="scroll"><table class="{cls}" id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(body) + "\n</tbody></table></div>")
