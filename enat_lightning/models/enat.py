"""ENAT: the disentangled non-autoregressive transformer with computation reuse (paper §4).

Shape letters: B batch, L = grid**2 tokens (raster order), Lv visible, Lm masked, Lp visible in
the previous call, Ln newly revealed (visible now, masked before), D width, V codebook size.

forward(ids, cond, prev=None):
  0. the condition (class labels or captions, models/conditioning.py): the adaLN vector and, for
     text, the caption keys/values every block reads as extra context (once per sample);
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

from .blocks import Block, OutputHead, ReuseProjection, SelfCrossBlock, TokenEmbedding, init_transformer_weights
from .conditioning import ClassCondition, Condition, ConditionedNetwork, TextCondition
from .config import ENATConfig
from .tokens import ENATOutput, check_ids, put, split_positions, take


class ENAT(ConditionedNetwork):
    def __init__(self, cfg: ENATConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        block = {"sc": Block, "self_cross": SelfCrossBlock}[cfg.attention]
        self.embed = TokenEmbedding(cfg.codebook_size + 1, cfg.seq_len, D, cfg.embed_dropout)
        if cfg.condition == "class":  # attribute names = state-dict prefixes (official import, checkpoints)
            self.label_embed = ClassCondition(cfg.num_classes, D, cfg.class_dropout_prob)
        else:
            self.text_embed = TextCondition(cfg)
            self.register_load_state_dict_pre_hook(_rename_legacy_text_keys)
        self.encoder = nn.ModuleList(block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.enc_depth))
        self.decoder = nn.ModuleList(block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.dec_depth))
        for blk in self.condition_blocks():
            self.conditioner.adapt_block(blk)
        self.reuse_proj = ReuseProjection(D, cfg.mlp_ratio) if cfg.reuse_projection else nn.Identity()
        self.head = OutputHead(D, cfg.codebook_size)
        self.init_weights()

    @property
    def conditioner(self) -> ClassCondition | TextCondition:
        return self.text_embed if self.cfg.condition == "text" else self.label_embed

    def condition_blocks(self) -> list[nn.Module]:
        return [*self.encoder, *self.decoder]

    def init_weights(self) -> None:
        # Xavier Linears, N(0, 0.02) token/position/label tables, adaLN-Zero blocks (reasons in
        # blocks.py); text modulations other than "pooled" have no Linear to zero.
        init_transformer_weights(self, tables=(self.embed.word_embeddings, self.embed.position_embeddings,
                                               *self.conditioner.tables()),
                                 blocks=[b for b in self.condition_blocks() if isinstance(b.adaLN_modulation, nn.Sequential)])

    def forward(self, ids: torch.Tensor, cond, prev: ENATOutput | None = None,
                logits_at: str = "all") -> ENATOutput:
        """ids (B, L) with codebook_size = [MASK]; cond: class labels (B,), ``Captions`` or a prepared
        ``Condition`` (``prepare_condition``); prev: this network's output at the previous step."""
        cfg = self.cfg
        masking = check_ids(ids, cfg.seq_len, cfg.mask_id)  # (B, L)
        cond = self.prepare_condition(cond, batch=ids.shape[0])
        if len(cond) != ids.shape[0]:
            raise ValueError(f"the condition has {len(cond)} rows but ids has {ids.shape[0]}")
        x = self.embed(ids)  # (B, L, D)
        vis_idx, mask_idx = split_positions(masking, "masked tokens")  # (B, Lv), (B, Lm)

        if prev is None:
            visible, layer_feats = self._encode(take(x, vis_idx), vis_idx, cond)  # (B, Lv, D)
        else:
            visible, layer_feats = self._encode_reusing(x, masking, vis_idx, cond, prev)

        masked = take(x, mask_idx)  # (B, Lm, D)
        if masked.shape[1] > 0:
            n_keys = visible.shape[1] + masked.shape[1]
            for i, blk in enumerate(self.decoder, cfg.enc_depth):
                masked = blk(masked, cond.vector, ctx=visible, **cond.block_inputs(i, n_keys))

        feat = put(put(torch.zeros_like(x), vis_idx, visible), mask_idx, masked)  # (B, L, D)
        if logits_at == "all":
            logits = self.head(feat, self.embed.word_embeddings.weight)  # (B, L, V)
        elif logits_at == "masked":
            logits = self.head(masked, self.embed.word_embeddings.weight)  # (B, Lm, V)
        else:
            raise ValueError(f"logits_at must be 'all' or 'masked', got {logits_at!r}")
        return ENATOutput(logits, feat, masking, layer_feats)

    # -- encoder paths -------------------------------------------------------------------------
    def _encode(self, vis: torch.Tensor, vis_idx: torch.Tensor, cond: Condition):
        """Plain encoder: self-attention among the visible tokens only (plus caption keys/values)."""
        record = self.cfg.reuse_layers == "layerwise"
        inputs = []
        if vis.shape[1] > 0:
            for i, blk in enumerate(self.encoder):
                if record:
                    inputs.append(vis)
                vis = blk(vis, cond.vector, **cond.block_inputs(i, vis.shape[1]))
        layer_feats = None
        if record:
            B, _, D = vis.shape
            zeros = vis.new_zeros(B, self.cfg.seq_len, D)
            layer_feats = torch.stack([put(zeros, vis_idx, v) for v in inputs]) if inputs else \
                vis.new_zeros(self.cfg.enc_depth, B, self.cfg.seq_len, D)
        return vis, layer_feats

    def _encode_reusing(self, x, masking, vis_idx, cond: Condition, prev: ENATOutput):
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
                new = blk(new, cond.vector, ctx=context, **cond.block_inputs(i, context.shape[1] + new.shape[1]))

        full = put(put(torch.zeros_like(x), prev_vis_idx, reused), new_idx, new)  # (B, L, D)
        layer_feats = None
        if layerwise:
            layer_feats = prev.layer_feats.clone()
            for i, inp in enumerate(inputs):
                layer_feats[i] = put(layer_feats[i], new_idx, inp)
        return take(full, vis_idx), layer_feats


_LEGACY_TEXT_KEYS = {"text_proj.": "text_embed.proj.", "null_text": "text_embed.null_text",
                     "null_mask": "text_embed.null_mask"}


def _rename_legacy_text_keys(module, state_dict, prefix, *args) -> None:
    """Checkpoints of the former separate text model keep loading: old key names -> new ones."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in _LEGACY_TEXT_KEYS.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
