"""The map page in a real headless Chromium: upload a drone image, see matches, thumbnails and map markers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"headless Chromium is not installed ({CHROMIUM} and {CHROMEDRIVER}; "
        "scripts/bootstrap.sh installs the Debian packages chromium and chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_world import build_served_world  # noqa: E402


@contextlib.contextmanager
def serving(app):
    """Run ``app`` by uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_config):
    """The service over a tiny synthetic world; yields (base_url, world_root)."""
    from geobridge.serve.app import create_app

    model, index, world = build_served_world(tmp_path_factory.mktemp("browser"), tiny_model_config)
    with serving(create_app(model=model, index=index, workers=2)) as base_url:
        yield base_url, world


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never try to download a driver
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1250",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_upload_a_drone_image_and_see_matches_on_the_map(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base_url, world = server
    browser.get(base_url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    assert "vectors" in browser.find_element(By.ID, "service").text
    assert browser.find_elements(By.CSS_SELECTOR, "#land path.land"), "the offline world outline was not drawn"

    drone = world / "drone" / "p00002" / "00.png"
    browser.find_element(By.ID, "files").send_keys(str(drone))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue li")) == 1)
    Select(browser.find_element(By.CSS_SELECTOR, "#queue select.view")).select_by_value("drone")
    browser.find_element(By.ID, "text").send_keys("farmland with a few houses")
    browser.find_element(By.ID, "submit").click()

    wait.until(lambda d: d.execute_script("return document.body.dataset.state === 'done'"))
    matches = browser.find_elements(By.CSS_SELECTOR, "#matches li.match")
    assert 1 <= len(matches) <= 10
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert "°" in browser.find_element(By.ID, "estimate-coords").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map .marker.match")) == len(matches)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map .marker.estimate")) == 1
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#matches .thumb img')].some(i => i.complete && i.naturalWidth > 0)"
        )
    )

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "locate.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    severe = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe


def test_a_bad_upload_shows_the_error_and_the_page_still_works(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base_url, world = server
    browser.get(base_url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    browser.find_element(By.ID, "files").send_keys(str(broken))
    browser.find_element(By.ID, "submit").click()
    error = browser.find_element(By.ID, "error")
    wait.until(lambda d: error.get_attribute("hidden") is None and error.text)
    assert "broken.png" in error.text

    browser.find_element(By.CSS_SELECTOR, "#queue .remove").click()
    browser.find_element(By.ID, "text").send_keys("a coastal town")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.state === 'done'"))
    assert browser.find_elements(By.CSS_SELECTOR, "#matches li.match")


@pytest.fixture(scope="module")
def raster_server(tmp_path_factory, tiny_model_config):
    """The service over an index of a generated region's test orthomosaic; yields (base_url, region root)."""
    pytest.importorskip("rasterio")
    import torch

    from geobridge.index import build_raster_index
    from geobridge.models import GeoBridge
    from geobridge.serve.app import create_app
    from geobridge.synth.region import RegionConfig, generate_region

    root = tmp_path_factory.mktemp("browser-map") / "region"
    generate_region(root, RegionConfig(blocks=2, drones_per_block=1, drone_size=48, street=False))
    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).eval()
    index = build_raster_index(model, [root / "test" / "ortho.tif"], tile_m=100.0, stride_m=50.0,
                               show_progress_bar=False)
    with serving(create_app(model=model, index=index, workers=2)) as base_url:
        yield base_url, root


def test_the_map_shows_the_raster_overlay_and_the_match_footprints(raster_server, browser, tmp_path):
    import io
    import json

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base_url, root = raster_server
    browser.get_log("browser")  # drop what earlier tests in this browser logged (the bad upload's 422)
    browser.get(base_url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    overlay = browser.find_element(By.CSS_SELECTOR, "#overlays image.overlay")
    bounds = json.loads((root / "region.json").read_text())["splits"]["test"]["wgs84_bounds"]
    west, south, east, north = bounds
    assert float(overlay.get_attribute("x")) == pytest.approx(west + 180, abs=1e-6)
    assert float(overlay.get_attribute("y")) == pytest.approx(90 - north, abs=1e-6)
    assert float(overlay.get_attribute("width")) == pytest.approx(east - west, rel=1e-3)
    # the page zoomed to the raster: the view box is about the raster's size, not the world
    view_box = browser.execute_script("return document.getElementById('map').getAttribute('viewBox')")
    box = [float(v) for v in view_box.split()]
    assert box[2] < 10 * (east - west)

    queries = [json.loads(line) for line in (root / "test" / "queries.jsonl").read_text().splitlines()]
    browser.find_element(By.ID, "files").send_keys(str(root / "test" / queries[0]["path"]))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue li")) == 1)
    browser.find_element(By.ID, "top_k").clear()
    browser.find_element(By.ID, "top_k").send_keys("4")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.state === 'done'"))
    footprints = browser.find_elements(By.CSS_SELECTOR, "#footprints polygon.footprint")
    assert len(footprints) == len(browser.find_elements(By.CSS_SELECTOR, "#matches li.match")) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#footprints polygon.footprint.top")) == 1
    for polygon in footprints:  # every corner of every footprint lies on the raster
        for pair in polygon.get_attribute("points").split():
            x, y = (float(v) for v in pair.split(","))
            assert west - 1e-6 <= x - 180 <= east + 1e-6 and south - 1e-6 <= 90 - y <= north + 1e-6

    shot = tmp_path / "map-overlay.png"
    assert browser.find_element(By.ID, "map").screenshot(str(shot))
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.float64)
    h, w, _ = pixels.shape
    # drawn, not blank: the overlay's rendered terrain varies across the map centre (the sea and land are flat)
    centre = pixels[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    assert centre.std(axis=(0, 1)).mean() > 10
    # the footprints' outline colours (accent blue, estimate red) are on screen
    blue = (np.abs(pixels - [31, 111, 235]).sum(axis=2) < 60).sum()
    red = (np.abs(pixels - [215, 38, 61]).sum(axis=2) < 60).sum()
    assert blue > 20 and red > 20
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "map-overlay.png")
    severe = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
