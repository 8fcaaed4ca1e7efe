"""The page in a real browser: Debian's Chromium, headless, against the server on 127.0.0.1.

Chromium comes from the system (``make browser``; ``$CORONET_CHROMIUM``, default /usr/bin/chromium),
driven by the Playwright package; no browser is downloaded. A missing Chromium fails the test with
the way to install it, unless ``CORONET_SKIP_BROWSER=1``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from coronet.deploy.predict import Predictor
from coronet.deploy.serve import create_app
from deploy_helpers import LiveServer

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CORONET_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if os.environ.get("CORONET_SKIP_BROWSER") == "1":
        pytest.skip("CORONET_SKIP_BROWSER=1")
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser` (Debian package chromium), set "
            "CORONET_CHROMIUM to its path, or CORONET_SKIP_BROWSER=1 to skip the browser test"
        )
    return path


def test_page_uploads_a_film_and_shows_probabilities_and_grad_cam(chromium_path, tiny_model_dir, xray_paths, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    predictor = Predictor(tiny_model_dir)
    film = xray_paths[0]
    console_errors = []
    with LiveServer(create_app(predictor=predictor)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.goto(url + "/")
            expect(page.locator("#notice")).to_be_visible()
            expect(page.locator("#notice")).to_contain_text("Research tool, not a medical device")
            expect(page.locator("#model")).to_contain_text("coronet-test_resnet")
            # the tiny model was never tested per source: the page says so in a visible notice
            expect(page.locator("#source-warning")).to_be_visible()
            expect(page.locator("#source-warning")).to_contain_text("never measured")
            expect(page.locator("#model")).to_contain_text("Worst false COVID-19 rate over negative sources")

            page.locator("#file").set_input_files(str(film))

            rows = page.locator("#bars .bar-row")
            expect(rows).to_have_count(len(predictor.classes), timeout=60_000)
            expect(page.locator("#result")).to_be_visible()
            for image in ("#cam", "#image"):
                page.wait_for_function(
                    f"document.querySelector('{image}').complete && document.querySelector('{image}').naturalWidth > 0",
                    timeout=60_000,
                )
            shot = tmp_path / "browser-page.png"
            page.screenshot(path=str(shot), full_page=True)
            artefacts = REPO / "test-artifacts"
            artefacts.mkdir(exist_ok=True)
            shutil.copy(shot, artefacts / "browser-page.png")

            # The page shows what the API computes: the predicted class on top, the probabilities as bar widths.
            from coronet.data.imageio import read_image

            expected = dict(zip(predictor.classes, predictor.probabilities([read_image(film)])[0]))
            top = max(expected, key=expected.get)
            assert rows.first.get_attribute("data-class") == top
            expect(page.locator("#bars .bar-row.top")).to_have_attribute("data-class", top)
            expect(page.locator("#cam-class")).to_have_text(top)
            for row in rows.all():
                name = row.get_attribute("data-class")
                shown = float(row.locator(".bar-track").get_attribute("aria-valuenow"))
                assert abs(shown - expected[name]) < 1e-6
                track = row.locator(".bar-track").bounding_box()["width"]
                bar = row.locator(".bar").bounding_box()["width"]
                assert abs(bar / track - expected[name]) < 0.02
            cam_size = page.evaluate(
                "[document.querySelector('#cam').naturalWidth, document.querySelector('#cam').naturalHeight]"
            )
            film_shape = read_image(film).shape
            assert abs(cam_size[0] / cam_size[1] - film_shape[1] / film_shape[0]) < 0.02

            # A file that is not an X-ray: the page says what is wrong and stays usable.
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.locator("#file").set_input_files(str(bad))
            expect(page.locator("#error")).to_contain_text("not a PNG, JPEG or DICOM image", timeout=60_000)
            expect(page.locator("#result")).to_be_hidden()
        finally:
            browser.close()
    # The failed upload logs its 415 in the console; nothing else may go wrong on the page.
    assert all("415" in text for text in console_errors), console_errors


class _SlowForOneShape(Predictor):
    """A Predictor that takes ``delay`` seconds over films of one shape (the upload the test wants to be slow)."""

    def __init__(self, *args, slow_shape, delay: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow_shape, self.delay = slow_shape, delay

    def probabilities(self, images):
        if images and images[0].shape == self.slow_shape:
            time.sleep(self.delay)
        return super().probabilities(images)


def test_a_slow_reply_for_an_earlier_file_does_not_replace_the_latest(
    chromium_path, tiny_model_dir, xray_paths, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    from conftest import write_xray

    slow = write_xray(tmp_path / "slow.png", size=(333, 222))
    fast = xray_paths[0]
    predictor = _SlowForOneShape(tiny_model_dir, slow_shape=(222, 333), delay=3.0)
    with LiveServer(create_app(predictor=predictor, model_threads=2)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            expect(page.locator("#model")).to_contain_text("coronet-test_resnet")
            page.locator("#file").set_input_files(str(slow))
            expect(page.locator("#status")).to_contain_text("Analysing slow.png")
            page.locator("#file").set_input_files(str(fast))
            expect(page.locator("#status")).to_contain_text(f"Done: {fast.name}", timeout=60_000)
            time.sleep(4.0)  # the server has answered (or tried to answer) the slow upload by now
            expect(page.locator("#filename")).to_have_text(fast.name)
            expect(page.locator("#status")).to_contain_text(f"Done: {fast.name}")
            expect(page.locator("#error")).to_be_hidden()
        finally:
            browser.close()


def test_a_report_fits_a_1280_pixel_screen(chromium_path, tmp_path):
    """A 4-class report (paper columns beside ours) in Chromium at 1280 px: no page-wide horizontal scroll,
    the summary sentence on top; the screenshot is kept in test-artifacts/."""
    from playwright.sync_api import sync_playwright

    from coronet.evaluation.report import write_report
    from report_helpers import PAPER4, random_predictions

    run = tmp_path / "run"
    run.mkdir()
    random_predictions(120, PAPER4, seed=3, folds=4, patients=[f"p{i // 2}" for i in range(120)]).to_csv(
        run / "predictions.csv", index=False
    )
    write_report(run, n_bootstrap=30)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run / "report" / "report.html").as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            assert page.locator("p.lead").inner_text().startswith("On 120 films of 60 patients")
            shot = tmp_path / "report-1280.png"
            page.screenshot(path=str(shot), full_page=True)
            artefacts = REPO / "test-artifacts"
            artefacts.mkdir(exist_ok=True)
            shutil.copy(shot, artefacts / "report-1280.png")
        finally:
            browser.close()
