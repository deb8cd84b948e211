"""What every self-contained page here is made of: Agg figures as base64 PNGs, tables, one page shell.

The pages (server_load.html, report.html, compare.html) must open from a copied
folder, a CI artefact or an air-gapped host, so nothing is linked: images are
data URIs and the only script is inline. That script counts the images the
browser actually decoded into `<body data-plots-loaded=N>`, which is what the
headless-browser test reads back.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from pathlib import Path
from typing import Any

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
         "td.k,th.k{text-align:left}img{max-width:100%}figure{margin:1em 0}figcaption{color:#555}")
COUNT_PLOTS = ("<script>window.addEventListener('load',function(){document.body.dataset.plotsLoaded="
               "Array.prototype.filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0})"
               ".length;});</script>")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: reports are drawn on hosts without a display. In a Jupyter
    kernel the notebook's own (inline) backend is kept, so testbed.api's figures show in the notebook."""

    import matplotlib  # matplotlib: only when a figure is drawn

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    return plt


def png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed (reports draw many)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def save(fig: Any, path: Path, dpi: int = 100) -> Path:
    path.write_bytes(png(fig, dpi))
    return path


def img(data: bytes, alt: str, plot: str = "") -> str:
    """An <img> holding the PNG as a data URI; `plot` names it (data-plot) for tests and readers."""
    name = f' data-plot="{html.escape(plot)}"' if plot else ""
    return f'<img alt="{html.escape(alt)}"{name} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure(data: bytes, caption: str, plot: str) -> str:
    return f"<figure>{img(data, caption, plot)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def table(header: list[str], rows: list[list[Any]], first_left: bool = True) -> str:
    """A plain table; cells are escaped text, the first column left-aligned (it names the row)."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="k"' if first_left and i == 0 else ""
        return f"<{tag}{cls}>{html.escape(str(v))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as dotted key/value pairs; lists of scalars stay one value."""
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out if out or not prefix else [(prefix, "{}")]
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        return [kv for i, v in enumerate(obj) for kv in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, obj)]


def kv_table(obj: dict[str, Any]) -> str:
    return table(["key", "value"], [[k, "-" if v is None else v] for k, v in flatten(obj)])


def page(title: str, body: str) -> str:
    t = html.escape(title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title><style>{STYLE}</style></head>"
            f"<body><h1>{t}</h1>{body}{COUNT_PLOTS}</body></html>")
