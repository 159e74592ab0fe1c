"""The demo page (/demo) in a real browser: Debian's headless Chromium driven by Playwright against
`bentoml serve`.

Two servers, each started once for the module: the embedded MNIST ConvNet beside the ImageNet
MobileNetV2 of ../shared/weights as the photo model, seen in a desktop window with a mouse; and MNIST
alone, as a fresh clone serves it (/classify/photo answers 503), seen on a phone-sized touch screen.
Digits are drawn with real pointer input (mouse strokes; touch strokes through the DevTools protocol),
photos are real ant and bee photos. Every request the page makes is recorded and none may leave the
service's origin; no script error or blocked load may occur. Screenshots are saved under
test-artifacts/demo/ (their paths are printed).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Route, expect

from tests.conftest import HYMENOPTERA_DIR
from tests.support.browser import Chromium
from tests.support.server import EMBEDDED_PHOTO, REPO, Server, mnist_run

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "test-artifacts" / "demo"
MAX_REQUEST_BYTES = 1_000_000
VAL = HYMENOPTERA_DIR / "val"
ANT = VAL / "ants" / "1440002809_b268d9a66a.jpg"  # top-1 'ant' for this MobileNetV2
BEE = VAL / "bees" / "10870992_eebeeb3a12.jpg"  # top-1 'bee'
LARGEST_ANT = max((VAL / "ants").glob("*.jpg"), key=lambda path: path.stat().st_size)  # 2.1 MB
NOT_AN_IMAGE = HYMENOPTERA_DIR / "SOURCE.md"
ANSWER_TIMEOUT_MS = 60_000  # a shared CPU; MNIST answers in milliseconds when idle

Stroke = list[tuple[float, float]]  # points on the pad, as fractions of its width and height
ONE: list[Stroke] = [[(0.5, 0.15), (0.47, 0.85)]]
SEVEN: list[Stroke] = [[(0.28, 0.2), (0.72, 0.2)], [(0.72, 0.2), (0.42, 0.85)]]  # two strokes

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}


def leaves_origin(url: str, origin: str) -> bool:
    """Whether a request for `url` goes anywhere but `origin` (data: and blob: URLs stay in the page)."""
    if url.startswith("data:"):
        return False
    parts = urlsplit(url.removeprefix("blob:"))
    return f"{parts.scheme}://{parts.netloc}" != origin


def along(stroke: Stroke, steps: int = 12) -> Stroke:
    """The stroke's corners with `steps` points on each segment between them, as a hand moves."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in pairwise(stroke):
        points += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    return points


class DemoPage:
    """The demo page in its own browser context, with every request it makes and every error it logs."""

    def __init__(self, context: BrowserContext, server: Server) -> None:
        self.context = context
        self.origin = server.url
        self.page = context.new_page()
        self.page.set_default_timeout(ANSWER_TIMEOUT_MS)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.goto(f"{server.url}/demo")

    def _console(self, message: ConsoleMessage) -> None:
        # The browser logs every answer >= 400 ("Failed to load resource"): those are the tests' own doing.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def draw(self, strokes: list[Stroke], *, touch: bool = False) -> None:
        """Draw the strokes on the pad with the mouse (or a finger) and wait for the page's answer."""
        pad = self.page.locator("#digit-pad")
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        assert box is not None
        for stroke in strokes:
            path = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in along(stroke)]
            if touch:
                self._touch(path)
            else:
                self._mouse(path)
        self.settle("digit")

    def _mouse(self, path: list[tuple[float, float]]) -> None:
        mouse = self.page.mouse
        mouse.move(*path[0])
        mouse.down()
        for x, y in path[1:]:
            mouse.move(x, y)
        mouse.up()

    def _touch(self, path: list[tuple[float, float]]) -> None:
        """One finger along `path`: real touch input, which Chromium turns into the page's pointer events."""
        cdp = self.context.new_cdp_session(self.page)
        for kind, (x, y) in zip(["touchStart"] + ["touchMove"] * (len(path) - 1), path, strict=True):
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()

    def choose_photo(self, path: Path) -> None:
        self.page.set_input_files("#photo-file", path)
        self.settle("photo")

    def drop_photo(self, path: Path) -> None:
        """Drop the file on the drop zone, as a drag from the desktop delivers it."""
        transfer = self.page.evaluate_handle(
            """([name, data]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
                return transfer;
            }""",
            [path.name, base64.b64encode(path.read_bytes()).decode()],
        )
        self.page.dispatch_event("#photo-drop", "drop", {"dataTransfer": transfer})
        self.settle("photo")

    def settle(self, panel: str) -> None:
        """Wait until the panel has its answer for the latest input (labels and explanations)."""
        expect(self.page.locator(f"#{panel}")).to_have_attribute("aria-busy", "false")

    def labels(self, panel: str) -> list[str]:
        return self.page.locator(f"#{panel}-predictions .label").all_inner_texts()

    def status(self, panel: str) -> str:
        return self.page.locator(f"#{panel}-status").inner_text()

    def caption(self, figure: str) -> str:
        return self.page.locator(f"#{figure} .caption").inner_text()

    def image_size(self, figure: str) -> tuple[int, int]:
        """The natural size of the figure's image, once it is shown and loaded."""
        image = self.page.locator(f"#{figure} img")
        expect(image).to_be_visible()
        expect(image).to_have_js_property("complete", True)
        width, height = image.evaluate("image => [image.naturalWidth, image.naturalHeight]")
        return width, height

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")  # noqa: T201 (the artifact's path, for whoever reads the run)
        return path


def serving(home: Path, *, photo_model: bool, **settings: str) -> Iterator[Server]:
    """`bentoml serve` with the embedded MNIST model, and the ImageNet photo model if asked for."""
    server = Server(home, log=home / "serve.log", device="cpu", workers="1", torch_threads="1", **settings)
    server.export(mnist_run(home / "mnist"))
    if photo_model:
        server.export(EMBEDDED_PHOTO)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home-demo")
    yield from serving(home, photo_model=True, max_request_bytes=str(MAX_REQUEST_BYTES))


@pytest.fixture(scope="module")
def mnist_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("bentoml-home-demo-mnist"), photo_model=False)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    yield browser
    browser.close()


def open_page(chromium: Chromium, server: Server, options: dict[str, Any]) -> Iterator[DemoPage]:
    context = chromium.browser.new_context(**options)
    demo = DemoPage(context, server)
    yield demo
    context.close()
    assert [url for url in demo.requests if leaves_origin(url, demo.origin)] == []
    assert demo.errors == []


@pytest.fixture
def desktop(chromium: Chromium, photo_server: Server) -> Iterator[DemoPage]:
    yield from open_page(chromium, photo_server, DESKTOP)


@pytest.fixture
def phone(chromium: Chromium, mnist_server: Server) -> Iterator[DemoPage]:
    yield from open_page(chromium, mnist_server, PHONE)


def test_drawn_digits_are_classified(desktop: DemoPage) -> None:
    desktop.draw(SEVEN)
    assert desktop.labels("digit")[0] == "7"
    assert len(desktop.labels("digit")) == 5
    assert desktop.status("digit").startswith("mnist-convnet:")
    desktop.screenshot("desktop-seven")

    desktop.page.click("#digit-clear")
    assert desktop.labels("digit") == []
    desktop.draw(ONE)
    assert desktop.labels("digit")[0] == "1"


def test_the_drawing_is_prepared_like_mnist(desktop: DemoPage) -> None:
    """White on black, the ink's box scaled to fit 20x20 with its aspect ratio, centred by mass in 28x28."""
    desktop.draw(SEVEN)
    pixels = np.array(
        desktop.page.evaluate(
            """() => Array.from(document.getElementById("digit-input").getContext("2d")
                        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"""
        ),
        dtype=float,
    ).reshape(28, 28)
    pad = desktop.page.evaluate(
        """() => { const c = document.getElementById("digit-pad");
                   const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                   let [left, top, right, bottom] = [c.width, c.height, -1, -1];
                   for (let i = 0; i < d.length; i += 4) if (d[i] > 0) {
                     const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width);
                     [left, top] = [Math.min(left, x), Math.min(top, y)];
                     [right, bottom] = [Math.max(right, x), Math.max(bottom, y)];
                   }
                   return [right - left + 1, bottom - top + 1]; }"""
    )
    rows, columns = np.nonzero(pixels)
    height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
    assert max(height, width) == 20
    assert width / height == pytest.approx(pad[0] / pad[1], abs=1 / 20)  # aspect ratio, to a pixel
    assert pixels.max() == 255 and pixels[0, 0] == 0  # white strokes on black
    ys, xs = np.mgrid[0:28, 0:28] + 0.5  # pixel centres
    centre = (ys * pixels).sum() / pixels.sum(), (xs * pixels).sum() / pixels.sum()
    assert centre == pytest.approx((14, 14), abs=0.5)  # shifted by whole pixels


def test_photos_chosen_or_dropped_are_classified(desktop: DemoPage) -> None:
    desktop.choose_photo(ANT)
    assert desktop.labels("photo")[0] == "ant"
    assert desktop.status("photo").startswith("photo-classifier:")
    expect(desktop.page.locator("#photo-preview")).to_be_visible()
    desktop.screenshot("desktop-ant")

    desktop.drop_photo(BEE)
    assert desktop.labels("photo")[0] == "bee"


def test_digit_explanations_are_shown(desktop: DemoPage) -> None:
    desktop.draw(SEVEN)
    assert desktop.image_size("digit-heatmap") == (28, 28)
    assert desktop.caption("digit-heatmap").startswith("Grad-CAM of “7”")
    assert min(desktop.image_size("digit-maps")) > 0
    assert desktop.caption("digit-maps").startswith("32 feature maps (26×26)")
    assert min(desktop.image_size("digit-sobel")) > 0
    layers = desktop.page.locator("#digit-layer option").all_inner_texts()
    assert layers == ["0", "3", "6"]
    desktop.screenshot("desktop-seven-explained")

    desktop.page.select_option("#digit-layer", "3")
    desktop.settle("digit")
    assert desktop.caption("digit-maps").startswith("64 feature maps (11×11)")
    assert desktop.labels("digit")[0] == "7"


def test_photo_heatmap_is_shown(desktop: DemoPage) -> None:
    desktop.choose_photo(ANT)
    assert desktop.image_size("photo-heatmap") == (224, 224)
    assert desktop.caption("photo-heatmap").startswith("Grad-CAM of “ant”")
    desktop.screenshot("desktop-ant-explained")


def test_labels_stay_when_explanations_are_unavailable(desktop: DemoPage) -> None:
    """A service without the explanation routes answers them 404 (plain text): the page says so."""

    def not_found(route: Route) -> None:
        route.fulfill(status=404, content_type="text/plain; charset=utf-8", body="Not Found")

    for path in ("**/explain/*", "**/features/*"):
        desktop.page.route(path, not_found)
    desktop.draw(SEVEN)
    assert desktop.labels("digit")[0] == "7"
    assert desktop.caption("digit-heatmap") == "Grad-CAM unavailable: this service does not offer it (404)."
    assert desktop.caption("digit-maps") == "Feature maps unavailable: this service does not offer it (404)."
    expect(desktop.page.locator("#digit-heatmap img")).to_be_hidden()
    expect(desktop.page.locator("#digit-sobel")).to_be_hidden()

    desktop.choose_photo(ANT)
    assert desktop.labels("photo")[0] == "ant"
    assert desktop.caption("photo-heatmap") == "Grad-CAM unavailable: this service does not offer it (404)."
    desktop.screenshot("desktop-explanations-unavailable")


def service_error(server: Server, path: Path) -> tuple[int, str]:
    """The status and `error` text the service answers for this file on /classify/photo."""
    files = [("images", (path.name, path.read_bytes(), "application/octet-stream"))]
    response = httpx.post(f"{server.url}/classify/photo", files=files, timeout=60)
    return response.status_code, response.json()["error"]


def body_size_hidden(message: str) -> str:
    """The message without its request body's size (the browser's multipart boundary is its own)."""
    return re.sub(r"\d[\d,]* bytes", "... bytes", message)


def test_refusals_and_network_failures_are_explained(desktop: DemoPage, photo_server: Server) -> None:
    assert service_error(photo_server, NOT_AN_IMAGE)[0] == 400
    desktop.choose_photo(NOT_AN_IMAGE)
    assert desktop.status("photo") == (
        f"The service refused the file (400): {service_error(photo_server, NOT_AN_IMAGE)[1]}"
    )
    assert desktop.labels("photo") == []
    expect(desktop.page.locator("#photo-preview")).to_be_hidden()  # no broken image either

    status, error = service_error(photo_server, LARGEST_ANT)
    assert status == 413 and LARGEST_ANT.stat().st_size > MAX_REQUEST_BYTES
    desktop.choose_photo(LARGEST_ANT)
    shown = desktop.status("photo")
    assert shown.startswith("Too large for the service (413): ")
    assert body_size_hidden(shown) == body_size_hidden(f"Too large for the service (413): {error}")

    desktop.context.set_offline(True)
    desktop.draw(ONE)
    assert desktop.status("digit").startswith("Could not reach the service (network failure)")
    assert desktop.labels("digit") == []
    desktop.screenshot("desktop-refusals")
    desktop.context.set_offline(False)


def test_every_request_stays_on_the_service(desktop: DemoPage) -> None:
    """The page works offline: its files and its answers come from the service alone."""
    desktop.draw(SEVEN)
    desktop.choose_photo(ANT)
    paths = {urlsplit(url).path for url in desktop.requests if url.startswith(desktop.origin)}
    files = {"/demo/", "/demo/demo.css", "/demo/demo.js", "/demo/digit.js", "/demo/pad.js"}
    assert files | {"/classify/mnist", "/explain/mnist", "/features/mnist", "/classify/photo"} <= paths
    assert [url for url in desktop.requests if leaves_origin(url, desktop.origin)] == []


def test_phone_draws_with_touch(phone: DemoPage) -> None:
    page = phone.page
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    pad = page.locator("#digit-pad").bounding_box()
    assert pad is not None and pad["x"] >= 0 and pad["x"] + pad["width"] <= PHONE["viewport"]["width"]

    phone.draw(SEVEN, touch=True)
    assert phone.labels("digit")[0] == "7"
    phone.screenshot("phone-seven")
    page.tap("#digit-clear")
    scrolled = page.evaluate("window.scrollY")
    phone.draw(ONE, touch=True)
    assert phone.labels("digit")[0] == "1"
    assert page.evaluate("window.scrollY") == scrolled  # the finger drew; it did not scroll the page
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]


def test_phone_without_a_photo_model_says_so(phone: DemoPage, mnist_server: Server) -> None:
    status, error = service_error(mnist_server, ANT)
    assert status == 503
    phone.choose_photo(ANT)
    assert phone.status("photo") == f"The service or its model is not ready (503): {error}"
    assert phone.labels("photo") == []
    phone.screenshot("phone-no-photo-model")
