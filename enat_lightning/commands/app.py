"""`enat app`: a local web page to sample, tune the sampler and edit images (Gradio, the [app] extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def app(ckpt: Optional[Path] = None, tokenizer: Optional[str] = None, out: Path = Path("runs/app"),
        host: str = "127.0.0.1", port: Optional[int] = None, device: Optional[str] = None,
        text_encoder: Optional[str] = None, trust_checkpoint: bool = False, block: bool = True) -> dict:
    """Start a local web app: pick classes, tune the sampler, edit an image; shows GFLOPs/image, time and the `enat sample` line.

    Args:
        ckpt: a checkpoint or an export folder (`enat export`); default: the demo checkpoint of `make demo`
        tokenizer: the model's tokenizer ('demo', a VQGAN checkpoint, ...); default: the export's bundled one, or 'demo' for the demo checkpoint
        out: the app's own folder: edit inputs and Gradio's upload cache go here, nowhere else
        host: address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the app to your network)
        port: port (default: Gradio's, 7860, or the next free one)
        device: cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)
        text_encoder: text models: the encoder of the training shards, 'clip:DIR' or 'hash[:...]'
        trust_checkpoint: load a --ckpt holding pickled Python objects (can run code; only files you trust)
        block: serve until interrupted (false: return after starting, for scripts and tests)
    """
    import torch

    from enat_lightning.app import core
    from enat_lightning.app.ui import import_gradio, launch
    from enat_lightning.commands.common import check_device, check_output_dir

    check_device(device)
    check_output_dir(out)
    import_gradio(Path(out))  # a missing [app] extra fails before the model loads
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    session = core.open_session(ckpt, tokenizer, Path(out), device=device, text_encoder=text_encoder,
                                trust_checkpoint=trust_checkpoint)
    print(f"enat app: {session.ckpt} on {device}; sampler preset from {session.preset_source}; outputs in {out}")
    page = launch(session, host=host, port=port, block=block)
    return {"url": getattr(page, "local_url", None), "page": page, "session": session}
