"""Token-grid helpers shared by every network: the output type, gathers/scatters along the sequence,
and input validation (pure torch).

Shape letters: B batch, L tokens, n selected positions, D width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ENATOutput:
    """What a forward returns; pass it back as ``prev`` to the next sampling step.

    logits: (B, L, V), or (B, Lm, V) at the masked positions (raster order) when the call asked
            for ``logits_at="masked"``, or None for ``logits_at="none"`` (a reuse teacher needs
            only the features).
    feat:   (B, L, D) features before the final norm: visible positions hold the visible set,
            masked positions the decoder output.
    masking: (B, L) bool, True where the input was [MASK].
    layer_feats: (N_E, B, L, D) per-encoder-layer inputs, only for ``reuse_layers="layerwise"``.
    num_masked: [MASK] tokens per row as a host int when known (then a later call reading this
            output as ``prev`` needs no device read-back to size its gathers), else None.
    """

    logits: torch.Tensor | None
    feat: torch.Tensor
    masking: torch.Tensor
    layer_feats: torch.Tensor | None = None
    num_masked: int | None = None

    def select(self, rows: slice | torch.Tensor) -> "ENATOutput":
        lf = None if self.layer_feats is None else self.layer_feats[:, rows]
        logits = None if self.logits is None else self.logits[rows]
        return ENATOutput(logits, self.feat[rows], self.masking[rows], lf, self.num_masked)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of x (B, L, D) at idx (B, n) -> (B, n, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def put(base: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Copy of base (B, L, D) with values (B, n, D) written at idx (B, n)."""
    return base.scatter(1, idx.unsqueeze(-1).expand(-1, -1, base.shape[-1]), values)


def count_per_row(flags: torch.Tensor, what: str) -> int:
    """The number of True entries of flags (B, L), which every row must share (rectangular gathers).

    Reads the counts back to the host (a device sync): callers that know the count pass it instead.
    """
    counts = flags.sum(dim=1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise ValueError(f"every row must have the same number of {what}; got per-row counts "
                         f"{counts.tolist()}")
    return int(counts[0]) if counts.numel() else 0


def positions_order(flags: torch.Tensor) -> torch.Tensor:
    """(B, L) permutation listing each row's False positions, then its True ones, each in raster order."""
    return torch.argsort(flags.to(torch.uint8), dim=1, stable=True)


def split_positions(flags: torch.Tensor, what: str, n_true: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of False and True positions of flags (B, L), each in raster order.

    Every row must hold the same number of True entries (the tensors are rectangular). ``n_true``:
    that number when the caller knows it (no check, no device read-back); else it is counted.
    """
    if n_true is None:
        n_true = count_per_row(flags, what)
    order = positions_order(flags)  # (B, L), False first
    L = flags.shape[1]
    return order[:, : L - n_true], order[:, L - n_true:]


def check_labels(labels: torch.Tensor, batch: int, num_classes: int, values: bool = True) -> torch.Tensor:
    """(B,) or (B, 1) integer labels in [0, num_classes] (num_classes = null label) -> (B,).

    ``values=False`` checks shape and dtype only: the range check reads the labels back to the
    host (a device sync), which trusted callers that made the labels themselves skip.
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},) or ({batch}, 1), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if values and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}] ({num_classes} = null label); got "
                         f"min {int(labels.min())}, max {int(labels.max())}")
    return labels


def check_ids(ids: torch.Tensor, seq_len: int, mask_id: int, values: bool = True) -> torch.Tensor:
    """Validates (B, L) token ids (mask_id = [MASK]) and returns the (B, L) bool masking.

    ``values=False``: shape and dtype only (no device read-back), as in ``check_labels``.
    """
    if ids.dim() != 2 or ids.shape[1] != seq_len:
        raise ValueError(f"ids must have shape (B, {seq_len}), got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
    if values and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > mask_id):
        raise ValueError(f"token ids must lie in [0, {mask_id}] ({mask_id} = [MASK]); got min "
                         f"{int(ids.min())}, max {int(ids.max())}")
    return ids == mask_id
