"""The conventional NAT (MaskGIT-style) baseline and the Fig. 2 attention-removal variants.

Every token, visible or [MASK], passes through the same blocks with full self-attention; embeddings,
adaLN conditioning and the output head are those of ENAT. Shape letters as in ``enat.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Block, OutputHead, TokenEmbedding, init_transformer_weights
from .conditioning import ClassCondition, ConditionedNetwork
from .config import NATConfig
from .tokens import ENATOutput, check_ids, split_positions, take


def attention_allowed(masking: torch.Tensor, removal: str) -> torch.Tensor | None:
    """(B, 1, L, L) bool, True where query i may attend key j, for a Fig. 2 variant.

    "X_to_Y" removes attention with X-type queries and Y-type keys. The diagonal is always kept so
    that no query is left without a key (e.g. a visible query under visible_to_visible when every
    token is visible); a token reading itself carries no information from the removed side.
    """
    if removal == "none":
        return None
    q_kind, k_kind = removal.split("_to_")
    is_kind = {"mask": masking, "visible": ~masking}
    cut = is_kind[q_kind].unsqueeze(2) & is_kind[k_kind].unsqueeze(1)  # (B, L, L)
    eye = torch.eye(masking.shape[1], dtype=torch.bool, device=masking.device)
    return (~cut | eye).unsqueeze(1)


class NAT(ConditionedNetwork):
    def __init__(self, cfg: NATConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.embed = TokenEmbedding(cfg.codebook_size + 1, cfg.seq_len, D, cfg.embed_dropout)
        self.label_embed = ClassCondition(cfg.num_classes, D, cfg.class_dropout_prob)
        self.blocks = nn.ModuleList(Block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        # Full self-attention needs only the own-token K/V projection; drop the context one so DDP
        # sees no idle parameters.
        for blk in self.blocks:
            del blk.attn.kv.A
        self.head = OutputHead(D, cfg.codebook_size)
        self.init_weights()

    @property
    def conditioner(self) -> ClassCondition:
        return self.label_embed

    def init_weights(self) -> None:
        # As ENAT: Xavier Linears, N(0, 0.02) tables, adaLN-Zero blocks (reasons in blocks.py).
        init_transformer_weights(self, tables=(self.embed.word_embeddings, self.embed.position_embeddings,
                                               self.label_embed.embedding_table),
                                 blocks=self.blocks)

    def forward(self, ids: torch.Tensor, labels, prev: ENATOutput | None = None,
                logits_at: str = "all", attention_removal: str | None = None, *,
                num_masked: int | None = None) -> ENATOutput:
        """``prev`` is accepted and ignored: a NAT re-encodes every token at every step.

        ``attention_removal`` overrides the config's variant for this call (inference-time cut).
        ``num_masked``: as in ``ENAT.forward`` (trusted input, no device read-back).
        """
        cfg = self.cfg
        if logits_at not in ("all", "masked", "none"):
            raise ValueError(f"logits_at must be 'all', 'masked' or 'none', got {logits_at!r}")
        trusted = num_masked is not None
        masking = check_ids(ids, cfg.seq_len, cfg.mask_id, values=not trusted)  # (B, L)
        cond = self.prepare_condition(labels, batch=ids.shape[0], values=not trusted)  # vector (B, D)
        if len(cond) != ids.shape[0]:
            raise ValueError(f"the condition has {len(cond)} rows but ids has {ids.shape[0]}")
        allowed = attention_allowed(masking, attention_removal or cfg.attention_removal)
        x = self.embed(ids)  # (B, L, D)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cond.vector, attn_mask=allowed, modulation=cond.modulation(i, blk))
        logits = None
        if logits_at == "all":
            logits = self.head(x, self.embed.word_embeddings.weight)  # (B, L, V)
        elif logits_at == "masked":
            _, mask_idx = split_positions(masking, "masked tokens", num_masked)
            logits = self.head(take(x, mask_idx), self.embed.word_embeddings.weight)  # (B, Lm, V)
        return ENATOutput(logits, x, masking, num_masked=num_masked)
