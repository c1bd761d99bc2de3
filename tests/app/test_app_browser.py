"""`enat app` in a real browser (headless Chromium via Playwright): generate a grid, change the order, run an
edit, see a bad setting's error; every image the page shows equals what the `enat sample` line it prints
writes. Skips, saying why, where Chromium or Playwright is missing (`.ci/run` installs Chromium).

ENAT_APP_SCREENSHOT=docs/figures/app.png also saves the page there (all ten classes); ENAT_APP_CKPT=CKPT_OR_EXPORT
then picks the model (an export with its tokenizer, or the demo checkpoint; default: the test's tiny model).
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_helpers import png, run_printed_command, tiny_export

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = os.environ.get("ENAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium browser on this machine, so the app's browser test cannot run: install it with "
                    "`apt-get install chromium` (.ci/run does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shown_image(page, elem_id: str) -> np.ndarray:
    """The PNG the page displays in ``#elem_id`` (fetched from the app's server by its <img src>)."""
    src = page.locator(f"#{elem_id} img").first.get_attribute("src")
    with urllib.request.urlopen(src, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.locator("ul[role=listbox] li", has_text=option).first.click()


def value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def click_and_wait(page, button: str, output: str, before: str) -> str:
    """Clicks ``#button`` and waits until the textbox ``#output`` changes from ``before``; returns its value."""
    page.locator(f"#{button}").click()
    page.wait_for_function("([id, old]) => { const e = document.querySelector(`#${id} textarea, #${id} input`);"
                           " return e && e.value && e.value !== old; }", arg=[output, before], timeout=120_000)
    return value(page, output)


def test_app_in_headless_chromium(tmp_path, capsys, monkeypatch):
    browser_path = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (python) is not installed: "
                                   "pip install playwright; the app's browser test needs it")
    pytest.importorskip("gradio", reason="gradio is not installed: pip install 'enat-lightning[app]'")
    from enat_lightning.commands.app import app

    screenshot = os.environ.get("ENAT_APP_SCREENSHOT")
    screenshot = Path(screenshot).resolve() if screenshot else None
    ckpt = Path(os.environ["ENAT_APP_CKPT"]).resolve() if screenshot and os.environ.get("ENAT_APP_CKPT") else \
        Path(tiny_export(tmp_path).name)
    labels = "0,1,2,3,4,5,6,7,8,9" if screenshot else "1,2,3"
    monkeypatch.chdir(tmp_path)  # relative paths in the page and its commands, as a user would type them
    started = app(ckpt=ckpt, out=Path("appout"), port=free_port(), block=False)
    server = started["page"]
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(started["url"])
            page.wait_for_selector("#generate")

            # 1. a grid: the page's image = grid.png of the `enat sample` line the page prints
            fill(page, "classes", labels)
            fill(page, "per_class", "2")
            fill(page, "seed", "3")
            command = click_and_wait(page, "generate", "command", "")
            assert value(page, "status") == "ok" and "GFLOPs/image" in page.locator("#cost").inner_text()
            assert f"--labels {labels} --per_class 2" in command and "--seed 3" in command
            out = run_printed_command(command, tmp_path / "cli_grid", capsys)
            assert np.array_equal(shown_image(page, "grid"), png(out / "grid.png"))

            # 2. another token order: a new command and again the same images as the CLI
            choose(page, "order", "halton")
            command2 = click_and_wait(page, "generate", "command", command)
            assert "--sampler.order halton" in command2
            out = run_printed_command(command2, tmp_path / "cli_halton", capsys)
            assert np.array_equal(shown_image(page, "grid"), png(out / "grid.png"))

            # 3. an edit of the first generated image: input | edited, equal to `enat sample --edit`
            page.get_by_role("tab", name="Edit").click()
            page.locator("#use_generated").click()
            page.wait_for_selector("#edit_input img", timeout=60_000)
            fill(page, "region", "0,0,8,8")
            fill(page, "targets", "5,7")
            edit_command = click_and_wait(page, "edit", "edit_command", "")
            assert "--edit" in edit_command and "--labels 5,7" in edit_command
            run_printed_command(edit_command, tmp_path / "cli_edit", capsys)
            stem = Path(edit_command.split("--edit ")[1].split()[0]).stem
            assert np.array_equal(shown_image(page, "edited"), png(tmp_path / "cli_edit" / f"{stem}_edited.png"))
            page.get_by_role("tab", name="Generate").click()
            if screenshot:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(500)
                page.screenshot(path=screenshot, full_page=True)

            # 4. a bad setting: the CLI's one line in the page
            choose(page, "guidance", "interval")
            status = click_and_wait(page, "generate", "status", "ok")
            assert status == ("enat: error: SamplerSettings.guidance_interval must be set ([first, last] steps, "
                              "inclusive) when guidance='interval', got None")
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            browser.close()
    finally:
        server.close()
    assert Image.open(tmp_path / "app.png").size[0] == 1300
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert not [p for p in written if p.name.endswith("_edited.png") and "cli_edit" not in str(p)]
