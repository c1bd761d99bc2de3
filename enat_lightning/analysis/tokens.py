"""Token-level measurements shared by the analyses (analysis/attention_removal.py) and the studies
(studies/study.py): a token shard set read into memory, the masked-token loss of a network on it, and the
default validation shards for a network.

The default validation shards come from a registry: a package above (the demo, enat_lightning.demo.data)
registers a function that names the shards a network fits, so nothing here imports the demo (the pattern of
enat_lightning/image_sets.py). Imports torch and numpy only.
"""
from __future__ import annotations

import numpy as np
import torch

from enat_lightning.errors import InvalidInput

# fn(network config) -> validation shard spec (str), or None when the registered data set does not fit the network
VAL_SHARDS: list = []


def register_val_shards(fn) -> None:
    """Let ``default_val_shards`` offer ``fn(cfg)``'s shards (the demo registers its embedded data sets)."""
    VAL_SHARDS.append(fn)


def default_val_shards(cfg, flag: str = "--data") -> str:
    """The validation shards a registered data set offers for a network config ``cfg``; otherwise a one-line
    error asking for ``flag``."""
    for fn in VAL_SHARDS:
        spec = fn(cfg)
        if spec:
            return str(spec)
    known = "the registered data sets do not fit it" if VAL_SHARDS else \
        "no data set is registered (import enat_lightning.demo.data, as `enat` does, for the demo data)"
    raise InvalidInput(f"pass {flag} with validation token shards for this network (grid {cfg.grid}, "
                       f"codebook_size {cfg.codebook_size}): {known}")


def load_tokens(spec: str, limit: int | None = None):
    """All (or the first ``limit``) samples of a token shard set -> tokens (N, L) int64 and their
    conditions: labels (N,), or for text shards ``Captions`` (each image's first caption).

    ``spec``: a shard directory with manifest.json, a manifest path or a shard pattern. Flipped copies
    are ignored (the loss is measured on the stored orientation).
    """
    from enat_lightning.data.reader import iter_shard, resolve_manifest
    from enat_lightning.models import Captions

    manifest, urls, where = resolve_manifest(spec)
    text = manifest.text is not None
    tokens, conds = [], []
    for url, info in zip(urls, manifest.shards):
        for _, s in iter_shard(url, manifest, expected=info.samples):
            tokens.append(torch.from_numpy(np.array(s.tokens, dtype=np.int64).reshape(-1)))
            conds.append((s.text[0], s.text_mask[0]) if text else int(s.label))
            if limit is not None and len(tokens) >= limit:
                break
        if limit is not None and len(tokens) >= limit:
            break
    if not tokens:
        raise InvalidInput(f"{where}: no samples")
    if text:
        return torch.stack(tokens), Captions(torch.from_numpy(np.stack([t for t, _ in conds])).float(),
                                             torch.from_numpy(np.stack([m for _, m in conds])).bool())
    return torch.stack(tokens), torch.tensor(conds)


@torch.no_grad()
def masked_token_loss(net, tokens: torch.Tensor, labels, *, removal: str | None = None,
                      batch_size: int = 64, seed: int = 0, mask_ratio_beta=(12.0, 3.0),
                      label_smoothing: float = 0.0) -> dict:
    """Masked-token cross-entropy / accuracy on tokens (N, L) with their conditions: labels (N,), or
    ``Captions`` of N rows for a text model.

    Masks follow the training recipe (one Beta(a, b) ratio per batch, random positions) from a
    generator seeded by (seed, batch index): every ``removal`` sees exactly the same masks, so
    differences between cuts are not masking noise.
    """
    from enat_lightning.masking import apply_mask, masked_accuracy, masked_ce, sample_mask, sample_mask_ratio

    if tokens.dim() != 2 or tokens.shape[1] != net.cfg.seq_len:
        raise InvalidInput(f"tokens must be (N, {net.cfg.seq_len}) for grid {net.cfg.grid}, got {tuple(tokens.shape)}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    total_loss = total_acc = 0.0
    total = 0
    try:
        for b, start in enumerate(range(0, tokens.shape[0], batch_size)):
            t = tokens[start:start + batch_size].to(device)
            y = labels[start:start + batch_size]
            y = y.to(device) if isinstance(y, torch.Tensor) else y  # Captions move inside the network
            g = torch.Generator().manual_seed(seed * 1_000_003 + b)
            masking = sample_mask(t, sample_mask_ratio(g, *mask_ratio_beta), g)  # (b, L)
            kwargs = {} if removal is None else {"attention_removal": removal}
            logits = net(apply_mask(t, masking, net.cfg.mask_id), y, logits_at="masked", **kwargs).logits
            n = t.shape[0]
            total_loss += float(masked_ce(logits, t, masking, label_smoothing)) * n
            total_acc += float(masked_accuracy(logits, t, masking)) * n
            total += n
    finally:
        net.train(was_training)
    if total == 0:
        raise InvalidInput("no validation tokens to evaluate")
    return {"loss": total_loss / total, "acc": total_acc / total}
