"""ENAT: the disentangled non-autoregressive transformer with computation reuse (paper §4).

Shape letters: B batch, L = grid**2 tokens (raster order), Lv visible, Lm masked, Lp visible in
the previous call, Ln newly revealed (visible now, masked before), D width, V codebook size.

forward(ids, labels, prev=None):
  1. embed all L tokens (word + position, LN);
  2. encoder over visible tokens only. With ``prev`` (the previous call's output), only newly
     revealed tokens are encoded, reading f(previous visible features) as context; previously
     visible positions take f(previous features) directly (§4.2, Eq. 5);
  3. decoder over [MASK] tokens, reading the visible set through SC-attention (§4.1);
  4. tied output head.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import (Block, LabelEmbedding, OutputHead, ReuseProjection, SelfCrossBlock, TokenEmbedding,
                     init_transformer_weights)
from .config import ENATConfig
from .tokens import ENATOutput, check_ids, check_labels, put, split_positions, take


class ENAT(nn.Module):
    def __init__(self, cfg: ENATConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        block = {"sc": Block, "self_cross": SelfCrossBlock}[cfg.attention]
        self.embed = TokenEmbedding(cfg.codebook_size + 1, cfg.seq_len, D, cfg.embed_dropout)
        self.label_embed = LabelEmbedding(cfg.num_classes, D)
        self.encoder = nn.ModuleList(block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.enc_depth))
        self.decoder = nn.ModuleList(block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.dec_depth))
        self.reuse_proj = ReuseProjection(D, cfg.mlp_ratio) if cfg.reuse_projection else nn.Identity()
        self.head = OutputHead(D, cfg.codebook_size)
        self.init_weights()

    def init_weights(self) -> None:
        # Xavier Linears, N(0, 0.02) token/position/label tables, adaLN-Zero blocks (reasons in blocks.py).
        init_transformer_weights(self, tables=(self.embed.word_embeddings, self.embed.position_embeddings,
                                               self.label_embed.embedding_table),
                                 blocks=[*self.encoder, *self.decoder])

    def forward(self, ids: torch.Tensor, labels: torch.Tensor, prev: ENATOutput | None = None,
                logits_at: str = "all") -> ENATOutput:
        cfg = self.cfg
        masking = check_ids(ids, cfg.seq_len, cfg.mask_id)  # (B, L)
        cond = self.label_embed(check_labels(labels, ids.shape[0], cfg.num_classes))  # (B, D)
        x = self.embed(ids)  # (B, L, D)
        vis_idx, mask_idx = split_positions(masking, "masked tokens")  # (B, Lv), (B, Lm)

        if prev is None:
            visible, layer_feats = self._encode(take(x, vis_idx), vis_idx, cond)  # (B, Lv, D)
        else:
            visible, layer_feats = self._encode_reusing(x, masking, vis_idx, cond, prev)

        masked = take(x, mask_idx)  # (B, Lm, D)
        if masked.shape[1] > 0:
            for blk in self.decoder:
                masked = blk(masked, cond, ctx=visible)

        feat = put(put(torch.zeros_like(x), vis_idx, visible), mask_idx, masked)  # (B, L, D)
        if logits_at == "all":
            logits = self.head(feat, self.embed.word_embeddings.weight)  # (B, L, V)
        elif logits_at == "masked":
            logits = self.head(masked, self.embed.word_embeddings.weight)  # (B, Lm, V)
        else:
            raise ValueError(f"logits_at must be 'all' or 'masked', got {logits_at!r}")
        return ENATOutput(logits, feat, masking, layer_feats)

    # -- encoder paths -------------------------------------------------------------------------
    def _encode(self, vis: torch.Tensor, vis_idx: torch.Tensor, cond: torch.Tensor):
        """Plain encoder: self-attention among the visible tokens only."""
        record = self.cfg.reuse_layers == "layerwise"
        inputs = []
        if vis.shape[1] > 0:
            for blk in self.encoder:
                if record:
                    inputs.append(vis)
                vis = blk(vis, cond)
        layer_feats = None
        if record:
            B, _, D = vis.shape
            zeros = vis.new_zeros(B, self.cfg.seq_len, D)
            layer_feats = torch.stack([put(zeros, vis_idx, v) for v in inputs]) if inputs else \
                vis.new_zeros(self.cfg.enc_depth, B, self.cfg.seq_len, D)
        return vis, layer_feats

    def _encode_reusing(self, x, masking, vis_idx, cond, prev: ENATOutput):
        """Reuse encoder (§4.2): encode only newly revealed tokens against f(previous features)."""
        cfg = self.cfg
        if prev.masking.shape != masking.shape or prev.feat.shape != x.shape:
            raise ValueError(f"prev does not match the input: prev masking {tuple(prev.masking.shape)} / "
                             f"feat {tuple(prev.feat.shape)} vs ids {tuple(masking.shape)} / width {x.shape[-1]}")
        if bool((masking & ~prev.masking).any()):
            raise ValueError("prev is not an earlier step of this input: some token visible in prev "
                             "is [MASK] now (visible tokens must stay visible)")
        prev_vis_idx, _ = split_positions(prev.masking, "previously masked tokens")  # (B, Lp)
        newly = ~masking & prev.masking  # (B, L)
        _, new_idx = split_positions(newly, "newly revealed tokens")  # (B, Ln)

        if cfg.reuse_tokens == "all":
            reused_all = self.reuse_proj(prev.feat)  # (B, L, D)
            reused, context = take(reused_all, prev_vis_idx), reused_all
        else:
            reused = self.reuse_proj(take(prev.feat, prev_vis_idx))  # (B, Lp, D)
            context = reused

        new = take(x, new_idx)  # (B, Ln, D)
        layerwise = cfg.reuse_layers == "layerwise"
        if layerwise and prev.layer_feats is None:
            raise ValueError("reuse_layers='layerwise' needs prev.layer_feats from a model of the same kind")
        inputs = []
        if new.shape[1] > 0:
            for i, blk in enumerate(self.encoder):
                if layerwise:
                    inputs.append(new)
                    context = self.reuse_proj(take(prev.layer_feats[i], prev_vis_idx))  # (B, Lp, D)
                new = blk(new, cond, ctx=context)

        full = put(put(torch.zeros_like(x), prev_vis_idx, reused), new_idx, new)  # (B, L, D)
        layer_feats = None
        if layerwise:
            layer_feats = prev.layer_feats.clone()
            for i, inp in enumerate(inputs):
                layer_feats[i] = put(layer_feats[i], new_idx, inp)
        return take(full, vis_idx), layer_feats
