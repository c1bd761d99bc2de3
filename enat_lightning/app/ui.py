"""The Gradio page of ``enat app``: a thin layer over ``app.core`` (every decision is made there).

Gradio is an optional extra (``pip install 'enat-lightning[app]'``) imported only here. Its upload
cache is pointed into the app's output folder (``GRADIO_TEMP_DIR``) and its analytics are off, so
the page writes nowhere else and contacts nothing.
"""
from __future__ import annotations

import os
import typing

from enat_lightning.sampling.orders import ORDERS
from enat_lightning.sampling.schedules import GUIDANCE, SCHEDULES

from . import core

# small token images (16-32 px) shown large and sharp; the served PNG stays the exact sampler output
CSS = ".image-container img, .image-frame img {image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain}"
SETTINGS = ("steps", "order", "schedule", "guidance", "cfg_scale", "guidance_power", "guidance_interval",
            "mask_temp", "samp_temp", "reuse", "uncond_skip_steps")


def import_gradio(out_dir) -> typing.Any:
    """gradio, set to cache uploads under ``out_dir`` and never phone home; a one-line error if absent."""
    from enat_lightning.errors import UserError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ["GRADIO_TEMP_DIR"] = str((out_dir / "gradio_cache").resolve())
    try:
        import gradio as gr
    except ImportError as e:
        raise UserError("enat app needs gradio, which is not installed: pip install 'enat-lightning[app]'") from e
    return gr


def build(session: core.Session):
    """The gr.Blocks page for ``session`` (not launched)."""
    gr = import_gradio(session.out_dir)
    p = session.preset
    with gr.Blocks(title="enat app", analytics_enabled=False) as page:
        gr.Markdown(f"## enat app · `{session.ckpt}`\n{type(session.cfg).__name__}, {session.cfg.grid}x{session.cfg.grid} "
                    f"tokens, {'captions' if session.is_text else f'{session.cfg.num_classes} classes'}; sampler preset "
                    f"from {session.preset_source}. Outputs: `{session.out_dir}`.")
        status = gr.Textbox(label="status", interactive=False, elem_id="status", max_lines=3)
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                gr.Markdown("### Sampler")
                w = {"steps": gr.Number(p.steps, label="steps", precision=0, minimum=1, elem_id="steps"),
                     "order": gr.Dropdown(list(ORDERS), value=p.order, label="order", elem_id="order"),
                     "schedule": gr.Dropdown(list(SCHEDULES), value=p.schedule if isinstance(p.schedule, str) else "cosine",
                                             label="mask schedule", elem_id="schedule"),
                     "guidance": gr.Dropdown(list(GUIDANCE), value=p.guidance, label="guidance schedule", elem_id="guidance"),
                     "cfg_scale": gr.Number(p.cfg_scale, label="guidance scale", elem_id="cfg_scale"),
                     "guidance_power": gr.Number(p.guidance_power, label="guidance power (power schedule)",
                                                 elem_id="guidance_power"),
                     "guidance_interval": gr.Textbox(",".join(map(str, p.guidance_interval or ())),
                                                     label="guidance interval FIRST,LAST (interval schedule)",
                                                     elem_id="guidance_interval"),
                     "mask_temp": gr.Number(p.mask_temp, label="mask temperature", elem_id="mask_temp"),
                     "samp_temp": gr.Number(p.samp_temp, label="sampling temperature", elem_id="samp_temp"),
                     "reuse": gr.Checkbox(p.reuse, label="computation reuse", elem_id="reuse"),
                     "uncond_skip_steps": gr.Textbox(",".join(map(str, p.uncond_skip_steps)),
                                                     label="skip the uncond pass at steps (e.g. 5,6)",
                                                     elem_id="uncond_skip_steps")}
                seed = gr.Number(0, label="seed", precision=0, elem_id="seed")
            with gr.Column(scale=3):
                with gr.Tab("Generate"):
                    if session.is_text:
                        classes = gr.Textbox("a photo of a cat", label="captions, one per line", lines=3, elem_id="classes")
                    else:
                        classes = gr.Textbox(",".join(map(str, range(min(10, session.cfg.num_classes)))),
                                             label="classes, e.g. 1,2,3", elem_id="classes")
                    per_class = gr.Number(1, label="images per class", precision=0, minimum=1, elem_id="per_class")
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    grid = gr.Image(label="samples", format="png", type="numpy", interactive=False, height=360,
                                    elem_id="grid")
                    info = gr.Markdown(elem_id="cost")
                    cmd = gr.Textbox(label="the same with `enat sample`", buttons=["copy"], interactive=False,
                                     elem_id="command")
                with gr.Tab("Edit"):
                    with gr.Row():
                        source = gr.Image(label="image to edit (upload)", type="numpy", sources=["upload", "clipboard"],
                                          format="png", height=240, elem_id="edit_input")
                        preview = gr.Image(label="region to regenerate", format="png", interactive=False, height=240,
                                           elem_id="edit_preview")
                    use_first = gr.Button("use the first generated image", elem_id="use_generated")
                    region = gr.Textbox("0,0,8,8", label="region X0,Y0,X1,Y1 (pixels)", elem_id="region")
                    targets = gr.Textbox("1", label="target classes, e.g. 3 or 3,5", elem_id="targets")
                    edit_go = gr.Button("Edit", variant="primary", elem_id="edit")
                    edited = gr.Image(label="input | edited", format="png", interactive=False, height=240,
                                      elem_id="edited")
                    edit_info = gr.Markdown(elem_id="edit_cost")
                    edit_cmd = gr.Textbox(label="the same with `enat sample --edit`", buttons=["copy"],
                                          interactive=False, elem_id="edit_command")
        last = gr.State(None)  # the last generated images (N, H, W, 3)
        knobs = [w[k] for k in SETTINGS]

        def settings(values):
            return core.settings_from_form(p, **dict(zip(SETTINGS, values)))

        def on_generate(text, n, s, *values):
            try:
                r = core.generate_grid(session, text, settings(values), s, int(n or 1),
                                       captions=text if session.is_text else None)
            except Exception as e:  # noqa: BLE001 - shown in the page as the CLI's one line
                return gr.update(), gr.update(), gr.update(), gr.update(), core.error_line(e)
            return r.grid, r.summary(), r.command, r.images, "ok"

        def on_edit(image, box, labels, s, *values):
            try:
                r = core.edit_region(session, image, box, labels, settings(values), s)
            except Exception as e:  # noqa: BLE001
                return gr.update(), gr.update(), gr.update(), core.error_line(e)
            return r.grid, r.summary(), r.command, "ok"

        def on_preview(image, box):
            try:
                return core.draw_region(core.prepare_input(session, image)[0], box) if image is not None else None
            except Exception:  # noqa: BLE001 - the Edit button reports a bad region
                return gr.update()

        go.click(on_generate, [classes, per_class, seed, *knobs], [grid, info, cmd, last, status])
        edit_go.click(on_edit, [source, region, targets, seed, *knobs], [edited, edit_info, edit_cmd, status])
        use_first.click(lambda imgs: imgs[0] if imgs is not None else None, [last], [source])
        for trigger in (source.change, region.change):
            trigger(on_preview, [source, region], [preview])
    return page


def launch(session: core.Session, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serves the page on ``host:port`` (local only unless the user binds another address)."""
    page = build(session)
    page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=not block,
                ssr_mode=False, show_error=True, inbrowser=False, css=CSS)
    return page
