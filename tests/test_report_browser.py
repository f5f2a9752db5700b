"""A study report and a sweep report as a user sees them: every page opened in headless Chromium.

Checks on every page: it loads, every image decodes (non-zero natural size), every link
resolves (a local file that exists, or an anchor on the page), no console errors or page
errors, and no horizontal scrolling in a 1280 px wide window. The study index shows its
verdict table before its first figure, and every figure has a caption with its question.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it), driven by the
``playwright`` Python package with ``executable_path`` (no browser download). Where either
is missing or Chromium cannot start, the test skips and says why. ``REPORT_SCREENSHOTS=DIR``
keeps a full-page screenshot of every page there (to look at when the layout changes).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM = os.environ.get("PROXYLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280

# ---- a tiny study: lr-width's own verdicts, figures and docstring on a few very short runs
NAME = "lr-width"
CLAIM = "test-sized lr-width study (tiny runs) for the browser test"


def sweeps(size):
    from dataclasses import replace

    from proxylab.studies import lr_width

    spec = lr_width.sweeps("smoke")[0]
    base = {**spec.base, "train.steps": 6, "train.eval_every": 3, "train.eval_batches": 1,
            "task.seq_len": 16, "train.batch_size": 4, "model.base_width": 8, "model.heads": 2}
    return [replace(spec, name="browser-tiny", base=base,
                    grid={**spec.grid, "model.width": [8, 16]})]


def verdicts(store, specs):
    from proxylab.studies import lr_width

    return lr_width.verdicts(store, specs)


def figures(store, specs, out_dir):
    from proxylab.studies import lr_width

    return lr_width.figures(store, specs, out_dir)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium; "
                    "or set PROXYLAB_CHROMIUM)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
    except Error as e:
        pw.stop()
        pytest.skip(f"Chromium at {CHROMIUM} cannot start here: {str(e).splitlines()[0]}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def study_report(tmp_path_factory, request):
    from proxylab import studies

    mod = request.module
    out = tmp_path_factory.mktemp("browser") / "study"
    saved = dict(studies.STUDIES)
    studies.STUDIES["browser-tiny"] = mod.__name__
    try:
        studies.run_study("browser-tiny", smoke=True, out=out, workers=1, show_progress=False)
    finally:
        studies.STUDIES.clear()
        studies.STUDIES.update(saved)
    return out


def check_page(browser, path: Path) -> dict:
    """Open `path` and check it; -> what the page holds (for further checks)."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    resp = page.goto(path.as_uri(), wait_until="load")
    assert resp is None or resp.ok, f"{path}: {resp and resp.status}"
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
    info = page.evaluate("""() => ({
        images: Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth,
                                                        i.naturalHeight]),
        links: Array.from(document.links).map(a => a.href),
        missingAnchors: Array.from(document.links)
            .filter(a => a.hash && a.pathname === location.pathname
                         && !document.getElementById(decodeURIComponent(a.hash.slice(1))))
            .map(a => a.href),
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        order: Array.from(document.querySelectorAll('table, img, figure'))
                    .map(e => e.tagName.toLowerCase()),
        figures: Array.from(document.querySelectorAll('figure')).map(f => ({
            img: !!f.querySelector('img'),
            caption: (f.querySelector('figcaption') || {}).innerText || ''})),
        title: document.title,
    })""")
    shots = os.environ.get("REPORT_SCREENSHOTS")
    if shots:
        name = "_".join(path.relative_to(path.parents[1]).parts).replace(".html", ".png")
        page.screenshot(path=str(Path(shots) / name), full_page=True)
    page.close()
    assert not errors, f"{path}: {errors}"
    assert info["title"], f"{path}: no title"
    for src, w, h in info["images"]:
        assert w > 0 and h > 0, f"{path}: image {src} does not decode"
    for href in info["links"]:
        url = urlparse(href)
        assert url.scheme == "file", f"{path}: link {href} leaves the report folder"
        target = Path(unquote(url.path))
        assert target.exists(), f"{path}: link {href} points at nothing"
    assert not info["missingAnchors"], f"{path}: links to anchors that are not on the page"
    assert info["scrollWidth"] <= info["clientWidth"], \
        f"{path}: {info['scrollWidth']} px wide in a {WIDTH} px window (horizontal scrolling)"
    return info


def test_every_page_of_a_study_report_in_chromium(browser, study_report):
    pages = sorted(study_report.rglob("index.html"))
    assert len(pages) == 2, pages          # the study index and its sweep's report
    shots = os.environ.get("REPORT_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
    for path in pages:
        info = check_page(browser, path)
        assert info["images"], f"{path}: no figures"
        assert all(f["img"] and "?" in f["caption"] for f in info["figures"]), \
            f"{path}: a figure without the question it answers: {info['figures']}"
        assert len(info["figures"]) == len(info["images"]), f"{path}: an image outside a figure"
        if path.parent == study_report:
            # the verdict table comes first, then the figures; every link is followed too
            assert info["order"][0] == "table", info["order"]
            assert any(h.endswith("summary.json") for h in info["links"])
            assert any(h.endswith("browser-tiny/index.html") for h in info["links"])


def test_a_sweep_report_page_without_figures_still_checks_out(browser, study_report, tmp_path):
    """A copy of the sweep report whose images are all gone fails the image check (the test
    can fail), which is what a broken report would look like."""
    broken = tmp_path / "r" / "broken"
    shutil.copytree(study_report / "browser-tiny", broken)
    for png in broken.glob("*.png"):
        png.write_bytes(b"not a png")
    with pytest.raises(AssertionError, match="does not decode|request failed|console"):
        check_page(browser, broken / "index.html")
