"""Which variant judges a task (issue 22): routes by camera, shadow picks by task. Pure, no clock.

A camera's place is a stable hash of its id (SHA-256, not Python's salted `hash()`), read as a
number in [0, 1): every process, every restart and every scheduler shard puts a camera in the same
place, so one camera is never judged by two variants at once. Shares are laid out in the order the
routes list them, from 0: growing a canary from 10 % to 50 % keeps the first 10 % of cameras on it
(a gray release only ever adds cameras to the new variant); the default takes the rest.

The shadow pick hashes the task id (with a different salt, so it is independent of the routing):
redelivery of a task picks it again, and about `share` % of the tasks are picked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

#: hash resolution: places are multiples of 1/SCALE
SCALE = 2**32


def place(text: str, salt: str = "route") -> float:
    """A stable number in [0, 1) for `text`."""
    h = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    return int.from_bytes(h[:4], "big") / SCALE


@dataclass(frozen=True)
class Router:
    """Camera → variant by share; task → shadow or not."""

    default: str
    shares: tuple[tuple[str, float], ...] = ()
    """(variant, percent of cameras) in the routes' order"""
    shadow: str | None = None
    shadow_share: float = 0.0
    """percent of tasks also sent to `shadow`"""

    @classmethod
    def from_keys(cls, keys) -> "Router":
        """The router of a validated `KeysConfig` (its `routes:` and `shadow:`)."""
        r, s = keys.routes, keys.shadow
        return cls(default=keys.default_variant(), shares=tuple((r.shares or {}).items()) if r else (),
                   shadow=s.variant if s else None, shadow_share=s.share if s else 0.0)

    def variant_for(self, camera_id: str) -> str:
        x = place(camera_id) * 100.0
        edge = 0.0
        for name, share in self.shares:
            edge += share
            if x < edge:
                return name
        return self.default

    def shadow_for(self, task_id: str, primary: str) -> str | None:
        """The shadow variant when this task is picked for it (never the task's own variant)."""
        if self.shadow is None or self.shadow == primary:
            return None
        return self.shadow if place(task_id, "shadow") * 100.0 < self.shadow_share else None
