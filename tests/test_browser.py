"""The course as a learner meets it: JupyterLab in a real (headless) browser.

Starts JupyterLab on localhost from the course's venv, opens a notebook in Debian's Chromium
through Playwright, runs every cell in the smoke profile, and checks what a learner would see: no
cell shows an error, the figures are drawn, the live widgets render (the widget manager is
installed and the sliders are on the page), and moving them changes what they show: notebook 03's
interpolation slider and its straight/spherical switch, notebook 01's interpolation slider and its
2-D latent explorer. Screenshots of what the browser saw go to ``data/screenshots/`` (git-ignored).

Skipped where no browser exists (no Chromium or no Playwright); under CI (``CI`` set) a missing
browser is a failure instead, since ``.ci/setup`` installs both.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "data" / "screenshots"
CHROMIUM = os.environ.get("DGM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

MISSING = [what for what, ok in (("Chromium (Debian package chromium)", CHROMIUM), ("Playwright (pip)", sync_playwright)) if not ok]
pytestmark = [pytest.mark.browser, pytest.mark.long,
              pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"),
                                 reason=f"no {' and no '.join(MISSING)} here; bash .ci/setup installs them")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, request):
    """A JupyterLab server on localhost serving a copy of the notebook named by the test's
    parameter; yields (url, notebook path)."""
    assert not MISSING, f"the browser test needs {' and '.join(MISSING)}: run bash .ci/setup"
    notebook = request.param
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / notebook, root / notebook)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (JupyterLab 4 otherwise keeps only the visible ones in the page)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')   # no news pop-up
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # a learner's kernel draws inline
    # what the browser test checks is the page and the widgets, not training: 512 images suffice
    env.update(DGM_PROFILE="smoke", DGM_CONFIG='{"train_limit": 512, "sprites_train": 512}',
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield f"{base}/lab/tree/{notebook}?token={token}", root / notebook
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def _widget_images(page) -> list[str]:
    return page.eval_on_selector_all("img.widget-image", "els => els.map(e => e.getAttribute('src'))")


def _slider(page, label: str):
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(f"^{label}$")))
    assert slider.count() == 1, f"the slider {label!r} is not on the page (found {slider.count()})"
    return slider


def _drag(page, slider, fraction: float) -> tuple[str, str, int]:
    """Drags a slider's handle to ``fraction`` of its track, as a mouse does; returns the readout
    before and after and how many widget images on the page changed."""
    readout, before = slider.locator(".widget-readout"), _widget_images(page)
    before_t = readout.inner_text()
    handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-target")
    h, t = handle.bounding_box(), track.bounding_box()
    page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
    page.mouse.down()
    page.mouse.move(t["x"] + fraction * t["width"], h["y"] + h["height"] / 2, steps=10)
    page.mouse.up()
    page.wait_for_function("before => { const now = [...document.querySelectorAll('img.widget-image')]"
                           ".map(e => e.getAttribute('src')); return now.some((s, i) => s !== before[i]); }",
                           arg=before, timeout=30_000)
    page.wait_for_timeout(500)
    after = _widget_images(page)
    return before_t, readout.inner_text(), sum(a != b for a, b in zip(before, after))


@pytest.mark.parametrize("lab", ["03_dcgan.ipynb", "01_vae.ipynb"], indirect=True)
def test_a_learner_runs_a_notebook_in_jupyterlab_and_moves_its_widgets(lab):
    url, path = lab
    shot = lambda name: SHOTS / f"{path.name[:2]}_{name}.png"  # noqa: E731
    SHOTS.mkdir(parents=True, exist_ok=True)
    n_code = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
        try:
            page.wait_for_function(f"document.querySelectorAll('.jp-CodeCell .jp-InputPrompt').length === {n_code}",
                                   timeout=60_000)
        except Exception:
            page.screenshot(path=shot("00_not_rendered"))
            raise AssertionError(f"JupyterLab rendered {len(_prompts(page))} of {n_code} code cells") from None
        page.screenshot(path=shot("01_notebook_opened"))

        # Run > Run All Cells, as a learner would
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        start, deadline = time.time(), time.time() + 600
        while True:
            prompts = _prompts(page)
            if all(re.fullmatch(r"\[\d+\]:", s) for s in prompts):
                break
            assert time.time() < deadline, f"cells still running or queued after 600 s: {prompts}"
            page.wait_for_timeout(1000)
        seconds = time.time() - start

        # no cell shows an error, in the page or in the saved file
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                              has_text=re.compile("Traceback|Error:"))
        assert errors.count() == 0, errors.first.inner_text()[:2000]
        assert page.get_by_text("Error displaying widget").count() == 0, "the widget manager is not installed"
        page.keyboard.press("Control+s")
        page.wait_for_timeout(2000)
        saved = nbformat.read(path, as_version=4)
        bad = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not bad, f"{bad[0].ename}: {bad[0].evalue}"
        # the figures are drawn, the interpolation's static strip among them
        # every live image keeps its aspect ratio on screen (a flex row once stretched a 28x28 decode to 112x400)
        shapes = page.eval_on_selector_all(
            "img.widget-image", "els => els.filter(e => e.naturalWidth > 0).map(e => [e.naturalWidth, "
            "e.naturalHeight, e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
        assert shapes, "no live image on the page"
        for nw, nh, w, h in shapes:
            # PNGs are zoomed 4x (widgets.ZOOM): at least native size, and never stretched
            assert w >= nw / 4 and abs(w / h - nw / nh) < 0.05, f"a {nw}x{nh} image drawn {w:.0f}x{h:.0f}"
        figures = page.locator(".jp-RenderedImage img")
        assert figures.count() >= 5, f"only {figures.count()} figures on the page"
        strip = next(c for c in saved.cells if c.cell_type == "code" and "widgets.interpolation" in c.source)
        assert any("image/png" in o.get("data", {}) for o in strip.outputs), "the static strip is not drawn"

        # the interpolation widget: its slider and its image, dragged two thirds along
        slider = _slider(page, "t")
        box = slider.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
        image = box.locator("img.widget-image").last
        box.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        box.screenshot(path=shot("02_slider_at_start"))
        before_png = image.screenshot()
        before_t, after_t, changed = _drag(page, slider, 2 / 3)
        box.screenshot(path=shot("03_slider_dragged"))
        assert after_t != before_t and 0.4 < float(after_t) < 0.9, (before_t, after_t)
        assert changed == 1 and image.screenshot() != before_png, "the image did not change when the slider moved"
        seen = [f"t {before_t} -> {after_t}"]

        if path.name.startswith("03"):
            # the straight/spherical switch redraws the image at the same t
            src = image.get_attribute("src")
            box.get_by_role("button", name="spherical").click()
            page.wait_for_function("([el, src]) => el.getAttribute('src') !== src",
                                   arg=[image.element_handle(), src], timeout=30_000)
            page.wait_for_timeout(500)
            box.screenshot(path=shot("04_spherical"))
            seen.append("spherical path redrawn")
        if path.name.startswith("01"):
            # the 2-D explorer: moving z1 moves the marker on the map and decodes another image
            explorer = _slider(page, "z₁")
            panel = explorer.locator("xpath=ancestor::div[contains(@class, 'widget-hbox')][1]")
            panel.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            panel.screenshot(path=shot("04_explorer_at_start"))
            before_z, after_z, changed = _drag(page, explorer, 0.8)
            panel.screenshot(path=shot("05_explorer_moved"))
            assert after_z != before_z, (before_z, after_z)
            assert changed == 2, f"{changed} widget images changed; the explorer's map and image should"
            seen.append(f"z1 {before_z} -> {after_z}")
        page.screenshot(path=shot("99_whole_page"), full_page=True)
        browser.close()
    print(f"{path.name} ran in JupyterLab in {seconds:.0f} s; {'; '.join(seen)}; screenshots in {SHOTS}")
