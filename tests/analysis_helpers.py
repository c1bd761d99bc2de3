"""Helpers shared by the analysis tests (a module, not a conftest: a second conftest.py would shadow
tests/conftest.py)."""
import functools

import torch

# Mask ratio ~ Beta(2, 2), half the tokens on average: enough visible context to learn to read it.
# Analysis tests must score with the same distribution (it is returned with the network).
DEMO_BETA = (2.0, 2.0)
V = 32  # codebook size of the tiny untrained networks


def tiny_nat(**kw):
    from enat_lightning.models import NAT, NATConfig
    from enat_testing import perturbed

    return perturbed(NAT(NATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, depth=2, **kw)))


def tiny_enat(**kw):
    from enat_lightning.models import ENAT, ENATConfig
    from enat_testing import perturbed

    return perturbed(ENAT(ENATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, enc_depth=2,
                                     dec_depth=1, **kw)))


@functools.lru_cache(maxsize=1)  # trained once per test session, shared by the modules that use it
def trained_demo_nat():
    """(NAT in eval mode, val tokens (N, 16), val labels (N,), mask-ratio Beta) after ~300 plain AdamW
    steps (no Lightning, ~10 s on one core): enough that the network reads visible tokens (masked loss
    ~3.0 vs log 128 = 4.85)."""
    from enat_lightning.analysis.tokens import load_tokens
    from enat_lightning.demo.data import ensure_demo_data
    from enat_lightning.masking import apply_mask, masked_ce, sample_mask, sample_mask_ratio
    from enat_lightning.models import NAT, NATConfig

    paths = ensure_demo_data(dataset="digits")
    tr, ytr = load_tokens(str(paths.train))
    va, yva = load_tokens(str(paths.val))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: thread handoff costs more than it saves on a shared CPU
    try:
        torch.manual_seed(0)
        net = NAT(NATConfig(codebook_size=128, num_classes=10, grid=4, width=64, heads=4, depth=2,
                            embed_dropout=0.0))
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            idx = torch.randint(len(tr), (64,), generator=g)
            tok, y = tr[idx], ytr[idx]
            m = sample_mask(tok, sample_mask_ratio(g, *DEMO_BETA), g)
            loss = masked_ce(net(apply_mask(tok, m, 128), y, logits_at="masked").logits, tok, m, 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval(), va, yva, DEMO_BETA
