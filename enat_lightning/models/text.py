"""Text-conditioned ENAT for MS-COCO text-to-image (paper §5, Table 5; design ours, see below).

Shape letters: B batch, L = grid**2 tokens (raster order), Lv visible, Lm masked, Lp visible in the
previous call, Ln newly revealed, T caption tokens, Dt text-encoder width, D model width,
V codebook size.

The paper only says "we concatenate text embeddings with visual tokens for conditioning"; no code
exists. Our reading, each part switchable in ``TextENATConfig``:

* **Text tokens as read-only context.** The caption embeddings (B, T, Dt) are projected once to
  (B, T, D) (``project_text`` -> ``TextContext``) and join the SC-attention context of every
  block they reach (``text_in``): encoder blocks read ``[text ; f(reused)]`` (plain pass: just
  ``[text]``), decoder blocks read ``[text ; visible]``. They go through ``kv.A`` exactly like the
  visible context, so every visible and [MASK] token can attend to them. They are never updated by
  the blocks, which keeps them identical across sampling steps: computation reuse (§4.2) is
  untouched. ``project_text`` runs once per sample and also computes every block's text
  keys/values (``kv.A`` of the normalised, modulated tokens: the modulation is constant too); the
  sampler passes that ``TextContext`` back each step, so a step only adds the T extra keys to the
  attention. ``block_forward`` is ``Block.forward`` taking those cached keys/values (pinned
  equal by a test). For ENAT-B with CFG the cache saves ~2.9 GMACs per image per step.
* **adaLN** (``adaln``): ``"none"`` (default) drops the label/condition modulation: blocks are
  plain pre-LN transformer blocks (shift = scale = 0, gates = 1, no parameters). This is U-ViT's
  COCO design (text only as tokens) and the only variant whose size is near the paper's 116M
  ENAT-B (the adaLN linears alone are 8·D²·16 ≈ 75M at D = 768; see readme for counts).
  ``"pooled"`` feeds the masked mean of the projected text tokens to the usual adaLN-Zero
  linears (B, D) -> (B, 8D); ``"constant"`` gives each block a learned, zero-initialised
  modulation vector (an input-independent adaLN, 8·D parameters per block).
* ``shared_context_kv``: tie ``kv.A`` to ``kv.B`` (context and own tokens share one key/value
  projection, as a plain transformer over the concatenated sequence would). With ``adaln="none"``
  this gives 12·D² per block, the count that matches the paper's 116M.
* **CFG null condition** = the empty caption's embedding, held in the ``null_text`` /
  ``null_mask`` buffers (filled from the shard directory by ``set_null_condition``; saved in the
  checkpoint). While unset, the null condition is "no text tokens" (an all-False mask), which is
  also a valid unconditional input. The training module's ``p_uncond`` (0.1, U-ViT) is applied by
  the batch prep (``drop_text``), never inside forward.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, OutputHead, ReuseProjection, TokenEmbedding, init_transformer_weights, modulate, plain_norm
from .config import ENATConfig, NetworkConfig, _check_choice, _check_common
from .tokens import ENATOutput, check_ids, put, split_positions, take

ADALN_MODES = ("none", "pooled", "constant")
TEXT_IN = ("both", "encoder", "decoder")


@dataclass(frozen=True)
class TextENATConfig(NetworkConfig):
    """ENAT conditioned on caption token embeddings (B, T, Dt) instead of a class label.

    Defaults: ENAT-B (width 768, 8 heads, 15/1) at 256 px with CLIP ViT-L/14 text (77 x 768),
    the U-ViT MS-COCO protocol the paper follows (§5).
    """

    codebook_size: int = 1024
    grid: int = 16
    width: int = 768
    heads: int = 8
    enc_depth: int = 15
    dec_depth: int = 1
    mlp_ratio: float = 4.0
    embed_dropout: float = 0.1
    text_dim: int = 768  # Dt, width of the text encoder's token embeddings
    text_len: int = 77  # T, tokens per caption (CLIP context length)
    adaln: Literal["none", "pooled", "constant"] = "none"
    text_in: Literal["both", "encoder", "decoder"] = "both"
    shared_context_kv: bool = False
    use_text_mask: bool = True  # False: attend to padding tokens too (U-ViT attends to all 77)
    reuse_projection: bool = True

    def __post_init__(self) -> None:
        _check_common(self)
        if self.enc_depth < 1 or self.dec_depth < 1:
            raise ValueError(f"enc_depth and dec_depth must be >= 1, got {self.enc_depth}/{self.dec_depth}")
        if self.text_dim < 1 or self.text_len < 1:
            raise ValueError(f"text_dim and text_len must be >= 1, got {self.text_dim}/{self.text_len}")
        _check_choice("adaln", self.adaln, ADALN_MODES)
        _check_choice("text_in", self.text_in, TEXT_IN)

    # _check_common reads these two; a text model has no class table
    num_classes = 1

    # the same derived values as ENATConfig (as NATConfig does)
    seq_len = ENATConfig.seq_len
    mask_id = ENATConfig.mask_id
    depth = ENATConfig.depth

    def to_dict(self) -> dict:
        return {"arch": "text_enat", **asdict(self)}


@dataclass
class TextContext:
    """Projected caption tokens, constant across sampling steps (compute once per sample).

    tokens: (B, T, D) projected embeddings; mask: (B, T) bool, True = attend;
    pooled: (B, D) masked mean of ``tokens`` (the adaLN input for ``adaln="pooled"``);
    kv: per block (encoder blocks, then decoder blocks) the text's keys/values (B, T, 2D), i.e.
        ``kv.A`` of the normalised, modulated tokens, or None for a block that does not read text.
        Neither the tokens nor the modulation change between steps, so they are computed once.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    kv: tuple[torch.Tensor | None, ...]

    def select(self, rows: slice | torch.Tensor) -> "TextContext":
        return TextContext(self.tokens[rows], self.mask[rows], self.pooled[rows],
                           tuple(None if k is None else k[rows] for k in self.kv))

    @staticmethod
    def cat(parts: list["TextContext"]) -> "TextContext":
        kv = tuple(None if ks[0] is None else torch.cat(ks) for ks in zip(*(p.kv for p in parts)))
        return TextContext(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                           torch.cat([p.pooled for p in parts]), kv)

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class TextPrompt:
    """What the sampler gets for text models: caption embeddings and an optional CFG null.

    text (B, T, Dt), mask (B, T) bool; null_text (T, Dt) and null_mask (T,) default to the model's
    stored null condition (the empty caption, see ``TextENAT.set_null_condition``).
    """

    text: torch.Tensor
    mask: torch.Tensor
    null_text: torch.Tensor | None = None
    null_mask: torch.Tensor | None = None


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


def text_block(cfg: TextENATConfig) -> Block:
    """An ENAT ``Block`` whose modulation and context projection follow the config."""
    D = cfg.width
    blk = Block(D, cfg.heads, cfg.mlp_ratio)
    if cfg.adaln == "constant":
        blk.adaLN_modulation = ConstantModulation(Block.n_mod * D)
    elif cfg.adaln == "none":
        blk.adaLN_modulation = FixedModulation(D, Block.n_mod, gate_chunks=(4, 7))  # attn and MLP gates
    if cfg.shared_context_kv:
        blk.attn.kv.A = blk.attn.kv.B  # one tied Linear: context and own tokens share keys/values
    return blk


def block_forward(blk: Block, x: torch.Tensor, cond: torch.Tensor, text_kv: torch.Tensor | None,
                  ctx: torch.Tensor | None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``Block.forward`` with the text part of the context given as precomputed keys/values.

    Keys/values are [text_kv ; kv.A(ctx) ; kv.B(own)], exactly what ``blk(x, cond, [text ; ctx])``
    builds (the context modulation is per token, so the text part can be computed apart). A test
    pins the equality with ``Block.forward`` so the two cannot drift apart.
    x (B, n, D) own tokens; cond (B, D); text_kv (B, T, 2D) or None; ctx (B, Lc, D) or None.
    """
    (sh_self, sc_self, sh_ctx, sc_ctx, gate_attn,
     sh_mlp, sc_mlp, gate_mlp) = blk.adaLN_modulation(cond).chunk(Block.n_mod, dim=-1)
    attn = blk.attn
    own = modulate(plain_norm(x), sh_self, sc_self)  # (B, n, D)
    parts = [] if text_kv is None else [text_kv]
    if ctx is not None and ctx.shape[1] > 0:
        parts.append(attn.kv.A(modulate(plain_norm(ctx), sh_ctx, sc_ctx)))  # (B, Lc, 2D)
    kv = torch.cat([*parts, attn.kv.B(own)], dim=1)  # (B, T+Lc+n, 2D)
    B, n, D = own.shape
    q = attn.q(own).view(B, n, attn.heads, -1).transpose(1, 2)  # (B, H, n, D/H)
    k, v = kv.view(B, kv.shape[1], 2, attn.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x (B, H, T+Lc+n, D/H)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, n, D/H)
    x = x + gate_attn.unsqueeze(1) * attn.proj(out.transpose(1, 2).reshape(B, n, D))
    return x + gate_mlp.unsqueeze(1) * blk.mlp(modulate(plain_norm(x), sh_mlp, sc_mlp))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, D) over the True entries of mask (B, T) -> (B, D); zeros for an empty row."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def drop_text(text: torch.Tensor, text_mask: torch.Tensor, null_text: torch.Tensor, null_mask: torch.Tensor,
              p: float, generator: torch.Generator | None = None,
              shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """CFG training dropout: each row becomes the null caption with probability p.

    text (B, T, Dt), text_mask (B, T), null_text (T, Dt), null_mask (T,) -> the (B, T, Dt), (B, T)
    pair. As ``masking.prepare_labels``: draws are made on the CPU generator for the global batch of
    B * world rows and this rank keeps rows rank::world, so the result does not depend on the
    number of processes.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p}")
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    B = text.shape[0]
    drop = (torch.rand(B * world, generator=generator)[rank::world] < p).to(text.device)  # (B,)
    text = torch.where(drop[:, None, None], null_text.to(text.dtype).expand_as(text), text)
    mask = torch.where(drop[:, None], null_mask.expand_as(text_mask), text_mask)
    return text, mask


class TextENAT(nn.Module):
    def __init__(self, cfg: TextENATConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.embed = TokenEmbedding(cfg.codebook_size + 1, cfg.seq_len, D, cfg.embed_dropout)
        self.text_proj = nn.Linear(cfg.text_dim, D)  # U-ViT's context_embed: Dt -> D
        self.encoder = nn.ModuleList(text_block(cfg) for _ in range(cfg.enc_depth))
        self.decoder = nn.ModuleList(text_block(cfg) for _ in range(cfg.dec_depth))
        self.reuse_proj = ReuseProjection(D, cfg.mlp_ratio) if cfg.reuse_projection else nn.Identity()
        self.head = OutputHead(D, cfg.codebook_size)
        # CFG null condition (the empty caption's embedding); persistent so checkpoints carry it.
        self.register_buffer("null_text", torch.zeros(cfg.text_len, cfg.text_dim))
        self.register_buffer("null_mask", torch.zeros(cfg.text_len, dtype=torch.bool))
        self.init_weights()

    def init_weights(self) -> None:
        # As ENAT (reasons in blocks.py), but no label table, and adaLN-Zero only for the "pooled"
        # Linear modulation: "constant" starts at zero already and "none" has no parameters.
        modulated = [*self.encoder, *self.decoder] if self.cfg.adaln == "pooled" else []
        init_transformer_weights(self, tables=(self.embed.word_embeddings, self.embed.position_embeddings),
                                 blocks=modulated)

    # -- condition -----------------------------------------------------------------------------
    def set_null_condition(self, text: torch.Tensor, mask: torch.Tensor) -> None:
        """Stores the empty caption's embedding (T, Dt) and mask (T,) as the CFG null condition."""
        T, Dt = self.cfg.text_len, self.cfg.text_dim
        if tuple(text.shape) != (T, Dt) or tuple(mask.shape) != (T,):
            raise ValueError(f"null condition must have shapes ({T}, {Dt}) and ({T},), got "
                             f"{tuple(text.shape)} and {tuple(mask.shape)}")
        self.null_text.copy_(text.to(self.null_text.dtype))
        self.null_mask.copy_(mask.bool())

    def null_condition(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The null caption repeated: (B, T, Dt) float, (B, T) bool."""
        return (self.null_text.unsqueeze(0).expand(batch, -1, -1),
                self.null_mask.unsqueeze(0).expand(batch, -1))

    def prepare_condition(self, cond: "TextPrompt | tuple | TextContext") -> tuple[TextContext, TextContext]:
        """Sampler hook: (conditional, null) TextContexts, projected once for all steps.

        cond: a TextPrompt, a (text (B, T, Dt), mask (B, T)) pair, or an already projected TextContext.
        """
        if isinstance(cond, TextContext):
            B = len(cond)
            null = self.project_text(*self.null_condition(B))
            return cond, null
        if isinstance(cond, (tuple, list)):
            cond = TextPrompt(*cond)
        if not isinstance(cond, TextPrompt):
            raise TypeError(f"a text model samples from a TextPrompt, a (text, mask) pair or a TextContext, "
                            f"got {type(cond).__name__}")
        device = self.null_text.device
        text, mask = cond.text.to(device), cond.mask.to(device)
        B = text.shape[0]
        if cond.null_text is None:
            null_text, null_mask = self.null_condition(B)
        else:
            if cond.null_mask is None:
                raise ValueError("TextPrompt.null_text needs null_mask as well")
            null_text = cond.null_text.to(device).expand(B, *cond.null_text.shape[-2:])
            null_mask = cond.null_mask.to(device).bool().expand(B, cond.null_mask.shape[-1])
        return self.project_text(text, mask), self.project_text(null_text, null_mask)

    def project_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> TextContext:
        """Caption embeddings (B, T, Dt) + mask (B, T) -> TextContext (once per sample)."""
        T, Dt = self.cfg.text_len, self.cfg.text_dim
        if text.dim() != 3 or tuple(text.shape[1:]) != (T, Dt):
            raise ValueError(f"text must have shape (B, {T}, {Dt}), got {tuple(text.shape)}")
        if tuple(text_mask.shape) != tuple(text.shape[:2]) or text_mask.dtype != torch.bool:
            raise ValueError(f"text_mask must be a bool tensor of shape {tuple(text.shape[:2])}, got "
                             f"{text_mask.dtype} {tuple(text_mask.shape)}")
        tokens = self.text_proj(text.to(self.text_proj.weight.dtype))  # (B, T, D)
        mask = text_mask if self.cfg.use_text_mask else torch.ones_like(text_mask)
        pooled = masked_mean(tokens, mask)  # (B, D)
        kv = []
        for blk, reads in zip([*self.encoder, *self.decoder], self.text_layers()):
            if reads:
                sh_ctx, sc_ctx = blk.adaLN_modulation(pooled).chunk(Block.n_mod, dim=-1)[2:4]
                kv.append(blk.attn.kv.A(modulate(plain_norm(tokens), sh_ctx, sc_ctx)))  # (B, T, 2D)
            else:
                kv.append(None)
        return TextContext(tokens, mask, pooled, tuple(kv))

    def text_layers(self) -> tuple[bool, ...]:
        """Per block (encoder, then decoder): does it read the caption tokens (``text_in``)?"""
        enc, dec = self.cfg.text_in in ("both", "encoder"), self.cfg.text_in in ("both", "decoder")
        return (enc,) * self.cfg.enc_depth + (dec,) * self.cfg.dec_depth

    # -- forward -------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, text: torch.Tensor | TextContext, text_mask: torch.Tensor | None = None,
                prev: ENATOutput | None = None, logits_at: str = "all") -> ENATOutput:
        """ids (B, L) with codebook_size = [MASK]; text (B, T, Dt) + text_mask (B, T), a
        (text, text_mask) pair, or a ``TextContext`` from ``project_text`` (then text_mask is None);
        prev as in ``ENAT``. The pair form lets callers written for ``model(ids, labels, prev=...)``
        (the training module, the sampler) pass a text condition where a label would go."""
        cfg = self.cfg
        masking = check_ids(ids, cfg.seq_len, cfg.mask_id)  # (B, L)
        if isinstance(text, (tuple, list)):
            if text_mask is not None or len(text) != 2:
                raise ValueError("pass the text condition either as a (text, text_mask) pair or as two arguments")
            text, text_mask = text
        if not isinstance(text, TextContext):
            if text_mask is None:
                raise ValueError("text_mask is required with raw text embeddings")
            text = self.project_text(text, text_mask)
        elif text_mask is not None:
            raise ValueError("pass text_mask only with raw text embeddings, not with a TextContext")
        if len(text) != ids.shape[0]:
            raise ValueError(f"text has {len(text)} rows but ids has {ids.shape[0]}")
        cond = text.pooled  # (B, D); ignored by the "none"/"constant" modulations
        x = self.embed(ids)  # (B, L, D)
        vis_idx, mask_idx = split_positions(masking, "masked tokens")  # (B, Lv), (B, Lm)
        if prev is None:
            visible = take(x, vis_idx)  # (B, Lv, D)
            if visible.shape[1] > 0:
                visible = self._run(self.encoder, 0, visible, cond, text, None)
        else:
            visible = self._encode_reusing(x, masking, vis_idx, cond, text, prev)  # (B, Lv, D)

        masked = take(x, mask_idx)  # (B, Lm, D)
        if masked.shape[1] > 0:
            masked = self._run(self.decoder, cfg.enc_depth, masked, cond, text, visible)

        feat = put(put(torch.zeros_like(x), vis_idx, visible), mask_idx, masked)  # (B, L, D)
        if logits_at == "all":
            logits = self.head(feat, self.embed.word_embeddings.weight)  # (B, L, V)
        elif logits_at == "masked":
            logits = self.head(masked, self.embed.word_embeddings.weight)  # (B, Lm, V)
        else:
            raise ValueError(f"logits_at must be 'all' or 'masked', got {logits_at!r}")
        return ENATOutput(logits, feat, masking)

    def _run(self, blocks: nn.ModuleList, first: int, own: torch.Tensor, cond: torch.Tensor, text: TextContext,
             ctx: torch.Tensor | None) -> torch.Tensor:
        """own (B, n, D) through blocks (global indices first, first+1, ...) reading [text ; ctx]."""
        text_kv = text.kv[first:first + len(blocks)]
        if len(text_kv) != len(blocks):
            raise ValueError(f"the TextContext holds keys/values for {len(text.kv)} blocks, this model has "
                             f"{len(self.encoder) + len(self.decoder)}: project the text with this model")
        attn_mask = None
        if any(k is not None for k in text_kv) and not bool(text.mask.all()):
            B, n = own.shape[:2]
            rest = text.mask.new_ones(B, (0 if ctx is None else ctx.shape[1]) + n)
            attn_mask = torch.cat([text.mask, rest], dim=1)[:, None, None, :]  # (B, 1, 1, T+Lc+n)
        for blk, kv in zip(blocks, text_kv):
            mask = attn_mask if kv is not None else None
            own = block_forward(blk, own, cond, kv, ctx, mask)
        return own

    def _encode_reusing(self, x, masking, vis_idx, cond, text: TextContext, prev: ENATOutput):
        """§4.2, Eq. 5: only newly revealed tokens are encoded, reading [text ; f(prev visible)]."""
        if prev.masking.shape != masking.shape or prev.feat.shape != x.shape:
            raise ValueError(f"prev does not match the input: prev masking {tuple(prev.masking.shape)} / "
                             f"feat {tuple(prev.feat.shape)} vs ids {tuple(masking.shape)} / width {x.shape[-1]}")
        if bool((masking & ~prev.masking).any()):
            raise ValueError("prev is not an earlier step of this input: some token visible in prev "
                             "is [MASK] now (visible tokens must stay visible)")
        prev_vis_idx, _ = split_positions(prev.masking, "previously masked tokens")  # (B, Lp)
        _, new_idx = split_positions(~masking & prev.masking, "newly revealed tokens")  # (B, Ln)
        reused = self.reuse_proj(take(prev.feat, prev_vis_idx))  # (B, Lp, D)
        new = take(x, new_idx)  # (B, Ln, D)
        if new.shape[1] > 0:
            new = self._run(self.encoder, 0, new, cond, text, reused)
        full = put(put(torch.zeros_like(x), prev_vis_idx, reused), new_idx, new)  # (B, L, D)
        return take(full, vis_idx)


class PromptBank(nn.Module):
    """A TextENAT driven by integer "labels" that index a table of P captions.

    Lets label-driven tools (``sampling.runner.sample_to_dir``, the FID callback, the sampler's
    chunking) generate from prompts unchanged: label i means caption i. ``generate`` calls
    ``prepare_condition``, which projects the chosen rows once per batch.
    text (P, T, Dt), mask (P, T) bool; kept where they are and in their dtype (float16 on the CPU
    for the 30k FID prompts: 3.5 GB instead of 7 GB at 77 x 768); rows move to the model's device
    when used.
    """

    def __init__(self, model: TextENAT, text: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        T, Dt = model.cfg.text_len, model.cfg.text_dim
        if text.dim() != 3 or tuple(text.shape[1:]) != (T, Dt) or tuple(mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"prompt embeddings must be (P, {T}, {Dt}) with a (P, {T}) mask to fit the model "
                             f"(text_len={T}, text_dim={Dt}); got {tuple(text.shape)} / {tuple(mask.shape)}")
        self.model = model
        self.cfg = model.cfg
        self.text, self.mask = text, mask.bool()  # plain tensors: not moved by .to(device)

    def __len__(self) -> int:
        return self.text.shape[0]

    def prepare_condition(self, labels) -> tuple[TextContext, TextContext]:
        idx = torch.as_tensor(labels, dtype=torch.long).to(self.text.device).reshape(-1)  # (B,)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"prompt indices must lie in [0, {len(self)}), got min {int(idx.min())}, "
                             f"max {int(idx.max())}")
        return self.model.prepare_condition(TextPrompt(self.text[idx].float(), self.mask[idx]))  # moved there

    def forward(self, ids: torch.Tensor, cond: TextContext, prev: ENATOutput | None = None,
                logits_at: str = "all") -> ENATOutput:
        return self.model(ids, cond, prev=prev, logits_at=logits_at)
