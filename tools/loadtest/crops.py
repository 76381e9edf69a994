"""Real JPEG crops for the simulated cameras, cut once at start from the repository's test photos.

A group's crop in production is the union box of its road users plus a margin, resized to at most
`max_side` px and JPEG-encoded (stages/detect/crops.py). Here the same kind of image comes from
regions of tests/data/bus.jpg and zidane.jpg (people, a bus, a street), so the scheduler sends the
simulated LLM real JPEG bytes of realistic size. Encoded once; every message reuses the strings.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"

#: (photo, left, top, right, bottom): regions the size of a group of 2–3 road users
REGIONS = (
    ("bus.jpg", 0, 220, 420, 560),
    ("bus.jpg", 380, 200, 810, 560),
    ("bus.jpg", 0, 380, 360, 900),
    ("bus.jpg", 200, 450, 700, 900),
    ("bus.jpg", 500, 380, 810, 880),
    ("zidane.jpg", 80, 40, 560, 720),
    ("zidane.jpg", 600, 0, 1280, 720),
    ("zidane.jpg", 300, 200, 900, 650),
)


@dataclass(frozen=True)
class Crop:
    b64: str
    size: tuple[int, int]


def real_crops(max_side: int = 256, quality: int = 80) -> list[Crop]:
    """The crops of REGIONS, each resized to at most `max_side` px (detect's default is 768; groups
    far from the camera are smaller) and encoded as JPEG, base64."""
    from PIL import Image

    from hazardctl.errors import ConfigError

    missing = sorted({name for name, *_ in REGIONS if not (DATA / name).is_file()})
    if missing:
        raise ConfigError(f"the loadtest cuts its camera crops from {DATA}/{{{','.join(missing)}}}, which is missing: "
                          "run it from a checkout of the repository")
    out: list[Crop] = []
    photos: dict[str, Image.Image] = {}
    for name, *box in REGIONS:
        if name not in photos:
            photos[name] = Image.open(DATA / name).convert("RGB")
        img = photos[name].crop(tuple(box))
        img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        out.append(Crop(base64.b64encode(buf.getvalue()).decode(), img.size))
    return out
