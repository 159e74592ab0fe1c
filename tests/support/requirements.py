"""Pins of a requirements file as uv and pip write them: `name==version [; marker] \\ --hash=sha256:...`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
TORCH_PINS = REQUIREMENTS / "torch.txt"
RUNTIME_LOCK = REQUIREMENTS / "runtime.lock.txt"
DEV_LOCK = REQUIREMENTS / "dev.lock.txt"
BENTO_LOCK = REQUIREMENTS / "bento.lock.txt"


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]
    requirement: Requirement


def read_pins(text: str) -> dict[str, Pin]:
    """Every `name==version` line (continuations joined, comments and options dropped), by normalised name."""
    pins: dict[str, Pin] = {}
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line or line.startswith("-"):  # options: -r, -c, --index-url...
            continue
        hashes = tuple(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
        requirement = Requirement(re.sub(r"\s*--hash=\S+", "", line))
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"not a pin: {line}"
        name = canonicalize_name(requirement.name)
        if name in pins:  # pinned twice (BentoML adds its own pin): installers take the hashes of both
            assert pins[name].version == specifier.version, f"{name} pinned at two versions"
            hashes = tuple(sorted({*pins[name].hashes, *hashes}))
            requirement = pins[name].requirement
        pins[name] = Pin(specifier.version, hashes, requirement)
    return pins
