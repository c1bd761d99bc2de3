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

from .blocks import Block, OutputHead, ReuseProjection, SelfCrossBlock, TokenEmbedding, init_transformer_weights, plain_norm
from .conditioning import ClassCondition, Condition, ConditionedNetwork, TextCondition
from .config import ENATConfig
from .tokens import ENATOutput, check_ids, count_per_row, positions_order, put, take


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

    @property
    def reuse_reads_masked(self) -> bool:
        """Whether a reuse forward reads the [MASK]-position features of ``prev`` (reuse_tokens="all").
        If not, the pass that makes ``prev`` (the EMA teacher of reuse training) may skip the
        decoder: ``forward(..., logits_at="none", decode=False)``."""
        return self.cfg.reuse_tokens == "all"

    def forward(self, ids: torch.Tensor, cond, prev: ENATOutput | None = None,
                logits_at: str = "all", *, num_masked: int | None = None, decode: bool = True) -> ENATOutput:
        """ids (B, L) with codebook_size = [MASK]; cond: class labels (B,), ``Captions`` or a prepared
        ``Condition`` (``prepare_condition``); prev: this network's output at the previous step;
        logits_at: "all", "masked" or "none" (features only, e.g. for a reuse teacher).
        ``decode=False`` (with logits_at="none"): no decoder; feat's [MASK] positions then hold their
        input embeddings, which is all a reuse step reads unless ``reuse_reads_masked``.

        ``num_masked``: the [MASK] count of every row when the caller knows it (training: from the
        mask ratio; sampling: from the schedule). The input is then trusted: ids, labels and
        ``prev`` get shape/dtype checks only and nothing is read back from the device (no host
        sync on a GPU). Without it every value is validated (clear ValueErrors).
        """
        cfg = self.cfg
        if logits_at not in ("all", "masked", "none"):
            raise ValueError(f"logits_at must be 'all', 'masked' or 'none', got {logits_at!r}")
        if not decode and logits_at != "none":
            raise ValueError(f"decode=False gives no [MASK] features to compute logits from; got logits_at={logits_at!r}")
        trusted = num_masked is not None
        masking = check_ids(ids, cfg.seq_len, cfg.mask_id, values=not trusted)  # (B, L)
        cond = self.prepare_condition(cond, batch=ids.shape[0], values=not trusted)
        if len(cond) != ids.shape[0]:
            raise ValueError(f"the condition has {len(cond)} rows but ids has {ids.shape[0]}")
        x = self.embed(ids)  # (B, L, D)
        L = cfg.seq_len
        n_masked = num_masked if trusted else count_per_row(masking, "masked tokens")
        order = positions_order(masking)  # (B, L): visible positions, then masked ones, each in raster order
        vis_idx, mask_idx = order[:, : L - n_masked], order[:, L - n_masked:]  # (B, Lv), (B, Lm)

        if prev is None:
            visible, layer_feats = self._encode(take(x, vis_idx), vis_idx, cond)  # (B, Lv, D)
        else:
            visible, layer_feats = self._encode_reusing(x, masking, n_masked, cond, prev, trusted)

        masked = take(x, mask_idx)  # (B, Lm, D)
        if decode and masked.shape[1] > 0:
            n_keys = visible.shape[1] + masked.shape[1]
            ctx = plain_norm(visible)  # every decoder block reads the same visible set: normalise once
            for i, blk in enumerate(self.decoder, cfg.enc_depth):
                masked = blk(masked, cond.vector, ctx=ctx, ctx_is_normed=True, modulation=cond.modulation(i, blk),
                             **cond.block_inputs(i, n_keys))

        # one scatter of [visible ; masked] through the permutation (no zero fill, no second copy)
        feat = torch.empty_like(x).scatter_(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]),
                                            torch.cat([visible, masked], dim=1))  # (B, L, D)
        logits = None
        if logits_at == "all":
            logits = self.head(feat, self.embed.word_embeddings.weight)  # (B, L, V)
        elif logits_at == "masked":
            logits = self.head(masked, self.embed.word_embeddings.weight)  # (B, Lm, V)
        return ENATOutput(logits, feat, masking, layer_feats, n_masked)

    def idle_parameters(self, reuse: bool, context: bool = True, new_tokens: bool = True) -> list[nn.Parameter]:
        """Parameters a training forward leaves out of the graph: without reuse, the reuse
        projection and the encoder's context-only parts; with reuse, the context-only parts when
        the previous step had no visible token (``context=False``) and the whole encoder when it
        reveals no new token (``new_tokens=False``). The module gives them an exact-zero gradient
        (DDP without ``find_unused_parameters``); touching only these keeps that cheap.
        """
        if reuse and not new_tokens:
            return list(self.encoder.parameters())
        mods = [] if reuse else [self.reuse_proj]
        if not reuse or not context:
            mods += [blk.attn.kv.A if isinstance(blk, Block) else blk.cross_attn for blk in self.encoder]
        return [p for m in mods for p in m.parameters()]

    # -- encoder paths -------------------------------------------------------------------------
    def _encode(self, vis: torch.Tensor, vis_idx: torch.Tensor, cond: Condition):
        """Plain encoder: self-attention among the visible tokens only (plus caption keys/values)."""
        record = self.cfg.reuse_layers == "layerwise"
        inputs = []
        if vis.shape[1] > 0:
            for i, blk in enumerate(self.encoder):
                if record:
                    inputs.append(vis)
                vis = blk(vis, cond.vector, modulation=cond.modulation(i, blk), **cond.block_inputs(i, vis.shape[1]))
        layer_feats = None
        if record:
            B, _, D = vis.shape
            zeros = vis.new_zeros(B, self.cfg.seq_len, D)
            layer_feats = torch.stack([put(zeros, vis_idx, v) for v in inputs]) if inputs else \
                vis.new_zeros(self.cfg.enc_depth, B, self.cfg.seq_len, D)
        return vis, layer_feats

    def _encode_reusing(self, x, masking, n_masked: int, cond: Condition, prev: ENATOutput, trusted: bool):
        """Reuse encoder (§4.2): encode only newly revealed tokens against f(previous features).

        Returns the visible set (B, Lv, D) in raster order and the layer features (layerwise only).
        """
        cfg = self.cfg
        B, L, D = x.shape
        if prev.masking.shape != masking.shape or prev.feat.shape != x.shape:
            raise ValueError(f"prev does not match the input: prev masking {tuple(prev.masking.shape)} / "
                             f"feat {tuple(prev.feat.shape)} vs ids {tuple(masking.shape)} / width {x.shape[-1]}")
        if not trusted and bool((masking & ~prev.masking).any()):
            raise ValueError("prev is not an earlier step of this input: some token visible in prev "
                             "is [MASK] now (visible tokens must stay visible)")
        n_prev = prev.num_masked if prev.num_masked is not None else \
            count_per_row(prev.masking, "previously masked tokens")
        prev_vis_idx = positions_order(prev.masking)[:, : L - n_prev]  # (B, Lp)
        n_new = n_prev - n_masked  # masking is a subset of prev.masking
        new_idx = positions_order(~masking & prev.masking)[:, L - n_new:]  # (B, Ln) newly revealed

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
            ctx = None if layerwise else plain_norm(context)  # the same context for every block: normalise once
            for i, blk in enumerate(self.encoder):
                if layerwise:
                    inputs.append(new)
                    ctx = plain_norm(self.reuse_proj(take(prev.layer_feats[i], prev_vis_idx)))  # (B, Lp, D)
                new = blk(new, cond.vector, ctx=ctx, ctx_is_normed=True, modulation=cond.modulation(i, blk),
                          **cond.block_inputs(i, ctx.shape[1] + new.shape[1]))

        layer_feats = None
        if layerwise:
            layer_feats = prev.layer_feats.clone()
            for i, inp in enumerate(inputs):
                layer_feats[i] = put(layer_feats[i], new_idx, inp)
        # [reused ; new] back into raster order: the visible positions are exactly prev_vis_idx and new_idx
        raster = torch.argsort(torch.cat([prev_vis_idx, new_idx], dim=1), dim=1)  # (B, Lv)
        return take(torch.cat([reused, new], dim=1), raster), layer_feats


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
