"""`enat models`: the Table 7 presets with parameter counts."""
from __future__ import annotations

import json

HELP = "list the model presets (paper Table 7) with parameter counts"


def add_arguments(p) -> None:
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--resolution", type=int, default=256, help="image side in pixels (latent = side/16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from enat_lightning.models.stats import preset_table

    rows = preset_table(num_classes=args.num_classes, grid=args.resolution // 16)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Presets at {args.resolution}px, {args.num_classes} classes (paper Table 7)")
    for col in ("preset", "arch", "N_E/N_D", "width", "heads", "reuse", "params (M)", "paper convention (M)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["preset"], r["arch"], r["layers"], str(r["width"]), str(r["heads"]),
                      "yes" if r["reuse"] else "no", f"{r['params_m']:.2f}", f"{r['params_paper_m']:.2f}")
    Console(width=max(120, Console().width)).print(table)  # never squeeze the preset names
    print("paper convention = ours + the official code's unused `prev_embedder` MLP (counted in the "
          "paper's 50.38M / 219M / 574M; we do not build it).")
    return 0
