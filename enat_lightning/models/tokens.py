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
            for ``logits_at="masked"``.
    feat:   (B, L, D) features before the final norm: visible positions hold the visible set,
            masked positions the decoder output.
    masking: (B, L) bool, True where the input was [MASK].
    layer_feats: (N_E, B, L, D) per-encoder-layer inputs, only for ``reuse_layers="layerwise"``.
    """

    logits: torch.Tensor
    feat: torch.Tensor
    masking: torch.Tensor
    layer_feats: torch.Tensor | None = None

    def select(self, rows: slice | torch.Tensor) -> "ENATOutput":
        lf = None if self.layer_feats is None else self.layer_feats[:, rows]
        return ENATOutput(self.logits[rows], self.feat[rows], self.masking[rows], lf)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of x (B, L, D) at idx (B, n) -> (B, n, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def put(base: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Copy of base (B, L, D) with values (B, n, D) written at idx (B, n)."""
    return base.scatter(1, idx.unsqueeze(-1).expand(-1, -1, base.shape[-1]), values)


def split_positions(flags: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of False and True positions of flags (B, L), each in raster order.

    Every row must hold the same number of True entries (the tensors are rectangular).
    """
    counts = flags.sum(dim=1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise ValueError(f"every row must have the same number of {what}; got per-row counts "
                         f"{counts.tolist()}")
    n_true = int(counts[0]) if counts.numel() else 0
    order = torch.argsort(flags.to(torch.uint8), dim=1, stable=True)  # (B, L), False first
    L = flags.shape[1]
    return order[:, : L - n_true], order[:, L - n_true:]


def check_labels(labels: torch.Tensor, batch: int, num_classes: int) -> torch.Tensor:
    """(B,) or (B, 1) integer labels in [0, num_classes] (num_classes = null label) -> (B,)."""
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},) or ({batch}, 1), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}] ({num_classes} = null label); got "
                         f"min {int(labels.min())}, max {int(labels.max())}")
    return labels


def check_ids(ids: torch.Tensor, seq_len: int, mask_id: int) -> torch.Tensor:
    """Validates (B, L) token ids (mask_id = [MASK]) and returns the (B, L) bool masking."""
    if ids.dim() != 2 or ids.shape[1] != seq_len:
        raise ValueError(f"ids must have shape (B, {seq_len}), got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > mask_id):
        raise ValueError(f"token ids must lie in [0, {mask_id}] ({mask_id} = [MASK]); got min "
                         f"{int(ids.min())}, max {int(ids.max())}")
    return ids == mask_id
