"""Writing analysis results: atomic files, CSV, Markdown tables, PNG figures (matplotlib Agg).

Every file is written atomically (``enat_lightning.fileio``: a temporary name in its folder, then
``os.replace``), so a reader never sees half a file. Standard library only; matplotlib is imported
lazily (Agg backend).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from enat_lightning.fileio import atomic_write_bytes


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def save_figure(fig, path: Path) -> None:
    """PNG bytes via an in-memory buffer, then an atomic replace."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def markdown_table(rows: list[dict], floatfmt: str = "{:.4f}") -> str:
    """A GitHub Markdown table of dict rows (columns in first-row order)."""
    if not rows:
        return ""
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]

    def fmt(v):
        if isinstance(v, float):
            return "n/a" if v != v else floatfmt.format(v)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
