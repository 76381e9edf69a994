"""How many tokens a request costs, the way a vision LLM provider counts them (an estimate, documented).

- image: one token per 28×28 px patch, ceil(width/28) × ceil(height/28) (Qwen-VL's rule, without its
  resizing), the size read from the JPEG SOF (or PNG IHDR) header of the data URL, no image library;
  an image whose size cannot be read (a remote URL, another format) counts `UNKNOWN_IMAGE_TOKENS`.
- text: ceil(characters / 4) per request (all text parts together), the usual rough English estimate.
- completion: ceil(characters of the answer / 4).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

PATCH_PX = 28
#: An image whose size is unknown: as a 640×640 image (23 × 23 patches).
UNKNOWN_IMAGE_TOKENS = 23 * 23

#: Base64 characters decoded in turn to find the size header (the SOF usually sits in the first KiB or two).
_HEADS_B64 = (4 * 1024, 64 * 1024)

# SOF markers carry the frame size: C0–CF except C4 (DHT), C8 (JPG), CC (DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF segment, or None if `data` holds none."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan before any SOF
            return None
        i += 2 + length
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 data URL image (JPEG or PNG), or None."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0 or ";base64" not in url[:comma]:
        return None
    b64 = url[comma + 1:]
    for chunk in [b64[:n] for n in _HEADS_B64 if n < len(b64)] + [b64]:
        try:
            data = base64.b64decode(chunk[: len(chunk) // 4 * 4], validate=False)
        except (binascii.Error, ValueError):
            return None
        size = jpeg_size(data) or png_size(data)
        if size:
            return size
    return None


def image_tokens(size: tuple[int, int] | None) -> int:
    if size is None:
        return UNKNOWN_IMAGE_TOKENS
    w, h = size
    return math.ceil(w / PATCH_PX) * math.ceil(h / PATCH_PX)


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
