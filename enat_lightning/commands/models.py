"""`enat models`: the Table 7 presets with parameter counts."""
from __future__ import annotations

from enat_lightning.errors import InvalidInput


def models(num_classes: int = 1000, resolution: int = 256, json: bool = False) -> list[dict]:
    """List the model presets (paper Table 7) with parameter counts.

    Args:
        num_classes: number of classes of the class-conditional models
        resolution: image side in pixels (latent grid = side/16)
        json: print JSON instead of a table
    """
    import json as json_lib

    from enat_lightning.models.stats import preset_table

    if resolution % 16:
        raise InvalidInput(f"--resolution {resolution} must be a multiple of 16 (VQGAN downsampling)")
    rows = preset_table(num_classes=num_classes, grid=resolution // 16)
    if json:
        print(json_lib.dumps(rows, indent=2))
        return rows
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Presets at {resolution}px, {num_classes} classes (paper Table 7)")
    for col in ("preset", "arch", "N_E/N_D", "width", "heads", "reuse", "params (M)", "paper convention (M)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["preset"], r["arch"], r["layers"], str(r["width"]), str(r["heads"]),
                      "yes" if r["reuse"] else "no", f"{r['params_m']:.2f}", f"{r['params_paper_m']:.2f}")
    Console(width=max(120, Console().width)).print(table)  # never squeeze the preset names
    print("paper convention = ours + the official code's unused `prev_embedder` MLP (counted in the "
          "paper's 50.38M / 219M / 574M; we do not build it).")
    return rows
