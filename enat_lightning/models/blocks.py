"""Building blocks shared by ENAT and the NAT baseline.

Shape letters: B batch, L = grid**2 tokens, Lv visible, Lm masked, Lc context tokens, n own tokens,
D width, H heads, V codebook size.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, n, D), shift/scale (B, D) broadcast over tokens."""
    # one fused kernel instead of a mul and an add: these element-wise passes are ~30% of CPU time
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def gated_residual(x: torch.Tensor, gate: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """x + gate * update with gate (B, D) broadcast over tokens, fused."""
    return torch.addcmul(x, gate.unsqueeze(1), update)


def plain_norm(x: torch.Tensor) -> torch.Tensor:
    """Non-affine LayerNorm used inside blocks (affinity comes from adaLN)."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _fusable(x: torch.Tensor, fc: nn.Linear) -> bool:
    """Whether ``linear_gelu`` may use the fused oneDNN kernel: fp32 on CPU, no autograd graph to
    record (the fused op has no derivative), not under a dispatch mode such as ``FlopCounterMode``
    (which would not count it) or torch.compile (which fuses by itself)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and fc.weight.dtype == torch.float32
            and fc.bias is not None and torch.backends.mkldnn.is_available()
            and not (torch.is_grad_enabled() and (x.requires_grad or fc.weight.requires_grad))
            and _get_current_dispatch_mode() is None and not torch.compiler.is_compiling())


def linear_gelu(x: torch.Tensor, fc: nn.Linear, approximate: str) -> torch.Tensor:
    """gelu(fc(x)). In CPU inference (sampling) one oneDNN GEMM with the GELU as its epilogue: the
    separate GELU pass over the (B, n, 4D) hidden activations was ~8% of a sampling run."""
    if _fusable(x, fc):
        return torch.ops.mkldnn._linear_pointwise(x, fc.weight, fc.bias, "gelu", [], approximate)
    return F.gelu(fc(x), approximate=approximate)


class MLP(nn.Module):
    """D -> hidden -> D with a GELU of the given approximation."""

    def __init__(self, dim: int, hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(x, self.fc1, self.approximate))


class KVProjection(nn.Module):
    """Separate key/value projections for context tokens (A) and the block's own tokens (B).

    Each output has 2D channels: keys first, values second.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.A = nn.Linear(dim, 2 * dim)
        self.B = nn.Linear(dim, 2 * dim)


class SCAttention(nn.Module):
    """SC-attention (paper §4.1): queries from own tokens, keys/values from [context ; own].

    Without context tokens it is plain self-attention through ``kv.B``. The whole thing is one
    ``scaled_dot_product_attention`` call over the concatenated keys.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = KVProjection(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, own: torch.Tensor, ctx: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, ctx_kv: torch.Tensor | None = None) -> torch.Tensor:
        # own (B, n, D) already normalised+modulated; ctx (B, Lc, D) likewise or None;
        # ctx_kv (B, T, 2D): context keys/values computed beforehand (caption tokens), placed first
        B, n, D = own.shape
        kv = self.kv.B(own)  # (B, n, 2D)
        if ctx is not None and ctx.shape[1] > 0:
            kv = torch.cat([self.kv.A(ctx), kv], dim=1)  # (B, Lc+n, 2D)
        if ctx_kv is not None:
            kv = torch.cat([ctx_kv, kv], dim=1)  # (B, T+Lc+n, 2D)
        q = self.q(own).view(B, n, self.heads, -1).transpose(1, 2)  # (B, H, n, D/H)
        k, v = kv.view(B, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x (B, H, Lc+n, D/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, n, D/H)
        return self.proj(out.transpose(1, 2).reshape(B, n, D))


class Block(nn.Module):
    """Transformer block with adaLN (8-way modulation) and SC-attention.

    Modulation chunks, in order: shift/scale for own tokens, shift/scale for context tokens,
    attention gate, shift/scale/gate for the MLP.
    """

    n_mod = 8

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = SCAttention(dim, heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, self.n_mod * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, ctx: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, ctx_kv: torch.Tensor | None = None,
                ctx_is_normed: bool = False, modulation: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, n, D) own tokens, updated; cond (B, D); ctx (B, Lc, D) read only; ctx_kv (B, T, 2D)
        # precomputed context keys/values (kv.A of modulated caption tokens, models/conditioning.py);
        # ctx_is_normed: ctx is already through plain_norm (blocks sharing one context let the
        # caller normalise it once per forward); modulation (B, n_mod * D): this block's
        # adaLN_modulation(cond) computed beforehand (``Condition.modulation``: once per sample)
        mod = self.adaLN_modulation(cond) if modulation is None else modulation
        (sh_self, sc_self, sh_ctx, sc_ctx, gate_attn,
         sh_mlp, sc_mlp, gate_mlp) = mod.chunk(self.n_mod, dim=-1)
        own = modulate(plain_norm(x), sh_self, sc_self)
        ctx_in = None if ctx is None or ctx.shape[1] == 0 else \
            modulate(ctx if ctx_is_normed else plain_norm(ctx), sh_ctx, sc_ctx)
        x = gated_residual(x, gate_attn, self.attn(own, ctx_in, attn_mask, ctx_kv))
        return gated_residual(x, gate_mlp, self.mlp(modulate(plain_norm(x), sh_mlp, sc_mlp)))


class SelfCrossBlock(nn.Module):
    """Table 6b ablation: self-attention among own tokens, then a separate cross-attention to the
    context tokens, then the MLP (the alternative to SC-attention's single joint attention).

    Modulation chunks: own shift/scale, context shift/scale, self-attn gate, cross-attn gate,
    MLP shift/scale/gate, plus a shift/scale for the cross-attention queries.
    """

    n_mod = 11

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.self_attn = SCAttention(dim, heads)  # only kv.B used
        self.cross_attn = SCAttention(dim, heads)  # queries from own, keys/values from context only
        self.mlp = MLP(dim, int(dim * mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, self.n_mod * dim))
        # Unused halves of the shared KV module would idle under DDP; drop them.
        del self.self_attn.kv.A
        del self.cross_attn.kv.B

    def forward(self, x: torch.Tensor, cond: torch.Tensor, ctx: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, ctx_is_normed: bool = False,
                modulation: torch.Tensor | None = None) -> torch.Tensor:
        mod = self.adaLN_modulation(cond) if modulation is None else modulation  # as in Block
        (sh_self, sc_self, sh_ctx, sc_ctx, gate_self, gate_cross, sh_mlp, sc_mlp, gate_mlp,
         sh_q, sc_q) = mod.chunk(self.n_mod, dim=-1)
        x = gated_residual(x, gate_self, self.self_attn(modulate(plain_norm(x), sh_self, sc_self)))
        if ctx is not None and ctx.shape[1] > 0:
            q_in = modulate(plain_norm(x), sh_q, sc_q)  # (B, n, D)
            kv_in = modulate(ctx if ctx_is_normed else plain_norm(ctx), sh_ctx, sc_ctx)  # (B, Lc, D)
            x = gated_residual(x, gate_cross, self._cross(q_in, kv_in))
        return gated_residual(x, gate_mlp, self.mlp(modulate(plain_norm(x), sh_mlp, sc_mlp)))

    def _cross(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        attn = self.cross_attn
        B, n, D = q_in.shape
        q = attn.q(q_in).view(B, n, attn.heads, -1).transpose(1, 2)
        k, v = attn.kv.A(kv_in).view(B, kv_in.shape[1], 2, attn.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return attn.proj(out.transpose(1, 2).reshape(B, n, D))


class TokenEmbedding(nn.Module):
    """Word + learned absolute position embedding, then an affine LayerNorm (eps 1e-6)."""

    def __init__(self, vocab: int, seq_len: int, dim: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(seq_len, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids) + self.position_embeddings.weight  # (B, L, D)
        return self.dropout(self.LayerNorm(x))


class ReuseProjection(nn.Module):
    """f(z) = z + MLP(LN(z)) applied to reused features (paper §4.2, Eq. 5)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), approximate="tanh")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.mlp(self.norm(z))


class OutputHead(nn.Module):
    """Final LN, then Linear-GELU-LN, then logits against the (tied, detached) word embeddings.

    The [MASK] row of the embedding is skipped, so logits have V = codebook_size columns.
    """

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.fc = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim, eps=1e-5)
        self.bias = nn.Parameter(torch.zeros(codebook_size + 1))

    def forward(self, feat: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.ln(linear_gelu(self.norm(feat), self.fc, "none"))  # (B, n, D)
        V = self.codebook_size
        # detached tie: the head must not train the input embeddings (official behaviour)
        return F.linear(h, word_embeddings[:V].detach(), self.bias[:V])  # (B, n, V)


def init_transformer_weights(module: nn.Module, tables: Iterable[nn.Embedding], blocks: Iterable[nn.Module]) -> None:
    """The initialisation ENAT and NAT share; each ``init_weights`` calls it once.

    ``tables``: embedding tables drawn N(0, 0.02); ``blocks``: adaLN blocks whose modulation is
    zeroed. Draws follow ``module.modules()`` order, then ``tables`` order (the parity tests pin it).
    """
    # Xavier for every Linear with zero bias (transformer default of DiT/U-ViT).
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    # Small normal embeddings, as BERT-style token tables.
    for table in tables:
        nn.init.normal_(table.weight, std=0.02)
    # Zero-init adaLN: every block starts as the identity (adaLN-Zero, DiT).
    for blk in blocks:
        nn.init.zeros_(blk.adaLN_modulation[-1].weight)
        nn.init.zeros_(blk.adaLN_modulation[-1].bias)
