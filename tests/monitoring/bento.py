"""Traffic for the real service (which runs as tests.support.server.Server): clients in background threads."""

from __future__ import annotations

import base64
import itertools
import random
import threading
from collections import Counter

import httpx


class Traffic:
    """Clients in background threads sending real digits until stopped: multipart and base64, 1-4
    images a request, and now and then a file that is not an image (which must get a 4xx)."""

    GARBAGE_EVERY = 10

    def __init__(self, url: str, digits: list[bytes], clients: int) -> None:
        self.url = url
        self.digits = digits
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(seed,)) for seed in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for count in itertools.count():
                if self._stop.is_set():
                    return
                images = rng.sample(self.digits, rng.randint(1, 4))
                if count % self.GARBAGE_EVERY == self.GARBAGE_EVERY - 1:
                    files = [("images", ("notes.png", b"this is not an image", "image/png"))]
                    self._check(client.post("/classify/mnist", files=files), expect_ok=False)
                elif count % 2:
                    payload = {"images": [base64.b64encode(image).decode() for image in images]}
                    self._check(client.post("/classify/mnist/base64", json=payload), len(images))
                else:
                    files = [("images", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
                    self._check(client.post("/classify/mnist", files=files), len(images))

    def _check(self, response: httpx.Response, images: int = 0, expect_ok: bool = True) -> None:
        """Counts every answer; keeps those that are wrong for their request."""
        key = (response.request.url.path, response.status_code)
        if expect_ok:
            ok = response.status_code == 200 and len(response.json()) == images
        else:
            ok = 400 <= response.status_code < 500
        with self._lock:
            self.statuses[key] += 1
            if not ok:
                self.unexpected.append(f"{key}: {response.text[:300]}")
