"""What a network is conditioned on: a class label or a caption, behind one interface.

Shape letters: B batch, T caption tokens, Dt text-encoder width, D model width, N blocks.

Every network (``ENAT``, ``NAT``) is a ``ConditionedNetwork``: its forward takes a raw condition
(class labels (B,), or ``Captions``) or a prepared ``Condition``, and callers use

    cond = model.prepare_condition(raw)     # once per sample: embeddings, text keys/values
    null = model.null_condition(cond)       # the unconditional (CFG) condition, same rows
    both = Condition.cat([cond, null])      # the 2B-row cond+uncond pass
    data, net = model.drop_condition(raw, p_uncond, generator, shard)   # training-time CFG drop
    model.supports_reuse                    # whether the network has a reuse path (ENAT)

The conditioner (``ClassCondition`` or ``TextCondition``, chosen by ``cfg.condition``) turns a raw
condition into a ``Condition``: the adaLN input vector (B, D) and, for text, every block's context
keys/values of the caption tokens (B, T, 2D) plus the caption padding mask.

Text design (the paper only says "we concatenate text embeddings with visual tokens"; no code
exists; ours follows U-ViT's MS-COCO model):

* The caption embeddings are projected once to (B, T, D) and join the SC-attention context of every
  block they reach (``text_in``) through that block's ``kv.A``, exactly like the visible context;
  every visible and [MASK] token can attend to them. They are never updated by the blocks, so they
  are the same at every sampling step: ``prepare`` computes each block's keys/values once per
  sample and a step only adds the T extra keys. Computation reuse (§4.2) is untouched.
* ``text_adaln``: "none" (default) gives plain pre-LN blocks (shift = scale = 0, gates = 1, no
  parameters), U-ViT's COCO design and the variant whose size is near the paper's 116M ENAT-B;
  "pooled" feeds the masked mean of the projected tokens to the usual adaLN-Zero linears;
  "constant" learns one zero-initialised modulation vector per block.
* ``text_shared_kv`` ties ``kv.A`` to ``kv.B`` (context and own tokens share a key/value projection,
  as a plain transformer over the concatenated sequence would).
* The CFG null condition is the empty caption's embedding, in the ``null_text`` / ``null_mask``
  buffers (``set_null``: filled from the shards' manifest by training; saved in checkpoints). While
  unset it is "no text tokens" (an all-False mask), also a valid unconditional input.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from enat_lightning.masking import prepare_labels

from .blocks import Block, modulate, plain_norm
from .tokens import check_labels
from .pretrained import PretrainedMixin

Shard = tuple[int, int]


# -- condition values --------------------------------------------------------------------------------
@dataclass
class Captions:
    """Raw caption condition: text-encoder token embeddings (B, T, Dt) and mask (B, T) bool (True =
    real token). Row slicing (``captions[i:j]``) gives the captions of samples i..j-1."""

    text: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.text.shape[0]

    def __getitem__(self, rows) -> "Captions":
        return Captions(self.text[rows], self.mask[rows])


@dataclass
class Condition:
    """A batch's condition as the blocks read it; computed once per sample, reused across steps.

    vector: (B, D) adaLN input (label embedding / pooled caption);
    kv:     per block (encoder blocks, then decoder blocks) the caption's context keys/values
            (B, T, 2D), or None for a block that reads no caption; () for class conditions;
    mask:   (B, T) bool, True = attend, or None when every caption token is attended.
    """

    vector: torch.Tensor
    kv: tuple[torch.Tensor | None, ...] = ()
    mask: torch.Tensor | None = None
    # per block index: adaLN_modulation(vector) (B, n_mod * D), filled on first use; None = no cache
    modulation_cache: dict[int, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def caching_modulation(self) -> "Condition":
        """This condition with a cache for every block's adaLN output. The sampler's steps share one
        condition, so each block's modulation (a (D, n_mod * D) weight read per block) is computed
        once per sample instead of once per step. The cache is filled and read only when no
        gradient is recorded, and belongs to the weights it was computed with: make a new one
        after changing them."""
        return dataclasses.replace(self, modulation_cache={})

    def modulation(self, index: int, block: nn.Module) -> torch.Tensor | None:
        """Block ``index``'s adaLN output from the cache (computed on first use), or None when this
        condition has no cache or gradients are recorded (the block then computes it itself)."""
        if self.modulation_cache is None or torch.is_grad_enabled():
            return None
        if index not in self.modulation_cache:
            self.modulation_cache[index] = block.adaLN_modulation(self.vector)
        return self.modulation_cache[index]

    def __len__(self) -> int:
        return self.vector.shape[0]

    def select(self, rows) -> "Condition":
        return Condition(self.vector[rows], tuple(None if k is None else k[rows] for k in self.kv),
                         None if self.mask is None else self.mask[rows])

    @staticmethod
    def cat(parts: list["Condition"]) -> "Condition":
        """Row-wise concatenation (e.g. the cond and null halves of a CFG pass)."""
        kv = tuple(None if ks[0] is None else torch.cat(ks) for ks in zip(*(p.kv for p in parts)))
        mask = None
        if any(p.mask is not None for p in parts):
            T = next(k.shape[1] for p in parts for k in p.kv if k is not None)
            mask = torch.cat([p.mask if p.mask is not None else p.vector.new_ones(len(p), T, dtype=torch.bool)
                              for p in parts])
        return Condition(torch.cat([p.vector for p in parts]), kv, mask)

    def block_inputs(self, index: int, n_keys: int) -> dict:
        """Keyword arguments of ``Block.forward`` for block ``index``: its cached caption keys/values
        and, with padding, the (B, 1, 1, T + n_keys) attention mask (n_keys = context + own tokens)."""
        kv = self.kv[index] if index < len(self.kv) else None
        if kv is None:
            return {}
        if self.mask is None:
            return {"ctx_kv": kv}
        rest = self.mask.new_ones(self.mask.shape[0], n_keys)
        return {"ctx_kv": kv, "attn_mask": torch.cat([self.mask, rest], dim=1)[:, None, None, :]}


# -- conditioners ------------------------------------------------------------------------------------
class ClassCondition(nn.Module):
    """Class table with one extra row (index num_classes) for the null label used by CFG.

    ``class_dropout_prob``: the official in-network label dropout, applied by ``drop`` in the
    training batch prep (never inside forward), on top of the dataset-level ``p_uncond``.
    """

    def __init__(self, num_classes: int, dim: int, class_dropout_prob: float = 0.1):
        super().__init__()
        self.num_classes, self.class_dropout_prob = num_classes, class_dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def tables(self) -> list[nn.Embedding]:
        return [self.embedding_table]

    def adapt_block(self, blk: nn.Module) -> None:
        pass  # label models use the blocks as built (adaLN-Zero from the label embedding)

    def prepare(self, labels, blocks, batch: int | None = None, values: bool = True) -> Condition:
        # values=False: shape/dtype checks only, no read-back of the label range (trusted callers)
        if isinstance(labels, Condition):
            return labels
        if isinstance(labels, Captions):
            raise TypeError("this model is class-conditional: give class labels (B,), not Captions")
        labels = torch.as_tensor(labels, dtype=torch.long) if not isinstance(labels, torch.Tensor) else labels
        if batch is None:
            labels = labels.reshape(-1)
        labels = check_labels(labels, labels.shape[0] if batch is None else batch, self.num_classes, values)  # (B,)
        return Condition(self.embedding_table(labels.to(self.embedding_table.weight.device)))  # (B, D)

    def null(self, cond: Condition, blocks) -> Condition:
        row = self.embedding_table.weight[self.num_classes]  # (D,)
        return Condition(row.expand(len(cond), -1))

    def drop(self, labels: torch.Tensor, p_uncond: float, generator, shard: Shard):
        lab = prepare_labels(labels, p_uncond, self.class_dropout_prob, self.num_classes, generator, shard)
        return lab.data, lab.net

    def example(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.long)


class ConstantModulation(nn.Module):
    """adaLN replacement: one learned (n_mod * D) vector per block, whatever the input."""

    def __init__(self, n: int):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(n))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.value.expand(cond.shape[0], -1)  # (B, n_mod * D)


class FixedModulation(nn.Module):
    """No adaLN: shift = scale = 0 and gates = 1, i.e. a plain pre-LN block. No parameters."""

    def __init__(self, dim: int, n_mod: int, gate_chunks: tuple[int, ...]):
        super().__init__()
        value = torch.zeros(n_mod, dim)
        value[list(gate_chunks)] = 1.0
        self.register_buffer("value", value.flatten(), persistent=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.value.expand(cond.shape[0], -1)  # (B, n_mod * D)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, D) over the True entries of mask (B, T) -> (B, D); zeros for an empty row."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def drop_captions(captions: Captions, null_text: torch.Tensor, null_mask: torch.Tensor, p: float,
                  generator: torch.Generator | None = None, shard: Shard = (0, 1)) -> Captions:
    """CFG training dropout: each row becomes the null caption (T, Dt) / (T,) with probability p.

    As ``masking.prepare_labels``: draws are made on the CPU generator for the global batch of
    B * world rows and this rank keeps rows rank::world, so the result does not depend on the
    number of processes.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p}")
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    text, mask = captions.text, captions.mask
    drop = (torch.rand(len(captions) * world, generator=generator)[rank::world] < p).to(text.device)  # (B,)
    text = torch.where(drop[:, None, None], null_text.to(text.device, text.dtype).expand_as(text), text)
    mask = torch.where(drop[:, None], null_mask.to(mask.device).expand_as(mask), mask)
    return Captions(text, mask)


class TextCondition(nn.Module):
    """Caption conditioning (module docstring): projection Dt -> D, the null caption, per-block
    caption keys/values. ``cfg`` is an ``ENATConfig`` with ``condition="text"``."""

    def __init__(self, cfg):
        super().__init__()
        self.text_len, self.text_dim = cfg.text_len, cfg.text_dim
        self.adaln, self.shared_kv, self.use_mask = cfg.text_adaln, cfg.text_shared_kv, cfg.text_use_mask
        enc, dec = cfg.text_in in ("both", "encoder"), cfg.text_in in ("both", "decoder")
        self.reads = (enc,) * cfg.enc_depth + (dec,) * cfg.dec_depth  # per block: does it read the caption?
        self.proj = nn.Linear(cfg.text_dim, cfg.width)  # U-ViT's context_embed: Dt -> D
        # CFG null condition (the empty caption's embedding); persistent so checkpoints carry it.
        self.register_buffer("null_text", torch.zeros(cfg.text_len, cfg.text_dim))
        self.register_buffer("null_mask", torch.zeros(cfg.text_len, dtype=torch.bool))

    def tables(self) -> list[nn.Embedding]:
        return []

    def adapt_block(self, blk: Block) -> None:
        """The block's modulation and context projection as the config asks."""
        D = blk.attn.q.in_features
        if self.adaln == "constant":
            blk.adaLN_modulation = ConstantModulation(Block.n_mod * D)
        elif self.adaln == "none":
            blk.adaLN_modulation = FixedModulation(D, Block.n_mod, gate_chunks=(4, 7))  # attn and MLP gates
        if self.shared_kv:
            blk.attn.kv.A = blk.attn.kv.B  # one tied Linear: context and own tokens share keys/values

    def set_null(self, text: torch.Tensor, mask: torch.Tensor) -> None:
        """Stores the empty caption's embedding (T, Dt) and mask (T,) as the CFG null condition."""
        T, Dt = self.text_len, self.text_dim
        if tuple(text.shape) != (T, Dt) or tuple(mask.shape) != (T,):
            raise ValueError(f"null condition must have shapes ({T}, {Dt}) and ({T},), got "
                             f"{tuple(text.shape)} and {tuple(mask.shape)}")
        self.null_text.copy_(text.to(self.null_text.dtype))
        self.null_mask.copy_(mask.bool())

    def prepare(self, captions, blocks, batch: int | None = None, values: bool = True) -> Condition:
        if isinstance(captions, Condition):
            return captions
        if not isinstance(captions, Captions):
            raise TypeError(f"this model is text-conditioned: give Captions(text (B, T, Dt), mask (B, T)) "
                            f"(e.g. from enat_lightning.text.encode_prompts), got {type(captions).__name__}")
        T, Dt = self.text_len, self.text_dim
        text, mask = captions.text, captions.mask
        if text.dim() != 3 or tuple(text.shape[1:]) != (T, Dt):
            raise ValueError(f"caption embeddings must have shape (B, {T}, {Dt}) (text_len={T}, text_dim={Dt}), "
                             f"got {tuple(text.shape)}")
        if tuple(mask.shape) != tuple(text.shape[:2]) or mask.dtype != torch.bool:
            raise ValueError(f"the caption mask must be a bool tensor of shape {tuple(text.shape[:2])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        # decided here, once per sample (a host sync); a meta mask (FLOP counting) stays a mask
        attend_all = not self.use_mask or (mask.device.type != "meta" and bool(mask.all()))
        device = self.proj.weight.device
        tokens = self.proj(text.to(device, self.proj.weight.dtype))  # (B, T, D)
        mask = mask.to(device)
        pooled = tokens.mean(1) if attend_all else masked_mean(tokens, mask)  # (B, D)
        kv = []
        for blk, reads in zip(blocks, self.reads):
            if reads:  # kv.A of the normalised, modulated tokens: constant over the sampling steps
                sh_ctx, sc_ctx = blk.adaLN_modulation(pooled).chunk(Block.n_mod, dim=-1)[2:4]
                kv.append(blk.attn.kv.A(modulate(plain_norm(tokens), sh_ctx, sc_ctx)))  # (B, T, 2D)
            else:
                kv.append(None)
        return Condition(pooled, tuple(kv), None if attend_all else mask)

    def null(self, cond: Condition, blocks) -> Condition:
        # The null caption is one row: project it once and expand to the batch.
        one = self.prepare(Captions(self.null_text[None], self.null_mask[None]), blocks)
        B = len(cond)
        return Condition(one.vector.expand(B, -1), tuple(None if k is None else k.expand(B, -1, -1) for k in one.kv),
                         None if one.mask is None else one.mask.expand(B, -1))

    def drop(self, captions: Captions, p_uncond: float, generator, shard: Shard):
        dropped = drop_captions(captions, self.null_text, self.null_mask, p_uncond, generator, shard)
        return dropped, dropped  # one dataset-level drop: teacher and online network see the same

    def example(self, batch: int) -> Captions:
        return Captions(torch.zeros(batch, self.text_len, self.text_dim),
                        torch.ones(batch, self.text_len, dtype=torch.bool))


class ConditionedNetwork(PretrainedMixin, nn.Module):
    """The conditioning interface of every network (module docstring). Subclasses build their
    conditioner and say which blocks may read caption keys/values (``condition_blocks``)."""

    @property
    def conditioner(self) -> ClassCondition | TextCondition:
        raise NotImplementedError

    def condition_blocks(self) -> list[nn.Module]:
        return []

    @property
    def supports_reuse(self) -> bool:
        """Whether the network has a computation-reuse path (ENAT yes, NAT no)."""
        return self.cfg.supports_reuse

    def prepare_condition(self, cond, batch: int | None = None, values: bool = True) -> Condition:
        """Raw condition (labels (B,) / ``Captions``) -> ``Condition``; a ``Condition`` is returned as is.
        ``values=False``: no read-back of label values (callers that made them, see ENAT.forward)."""
        return self.conditioner.prepare(cond, self.condition_blocks(), batch, values)

    def null_condition(self, cond: Condition) -> Condition:
        """The unconditional (CFG null) condition for the rows of ``cond``."""
        return self.conditioner.null(cond, self.condition_blocks())

    def drop_condition(self, cond, p_uncond: float, generator: torch.Generator | None = None,
                       shard: Shard = (0, 1)):
        """Training-time CFG dropout of a raw condition -> (data, net): ``data`` after the
        dataset-level drop (what the EMA reuse teacher sees), ``net`` what the online network sees."""
        return self.conditioner.drop(cond, p_uncond, generator, shard)

    def example_condition(self, batch: int = 1):
        """A valid raw condition of ``batch`` rows (label 0 / zero captions), e.g. for FLOP counts."""
        return self.conditioner.example(batch)
