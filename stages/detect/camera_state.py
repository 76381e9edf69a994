"""Is a camera live, stale or ended — and how long to wait before reconnecting (pure, clock passed in).

A camera is *live* while fresh frames arrive, *stale* from the moment a read fails, the stream
cannot be opened, or no acceptable frame came for `stale_after_s` (a frozen or black feed), and
*ended* when a file is finished. A stale camera is reported, and nothing is fed to the detector
for it: no black frame, no repeat of its last frame.
"""

from __future__ import annotations

from dataclasses import dataclass

LIVE, STALE, ENDED = "live", "stale", "ended"
STATES = (LIVE, STALE, ENDED)


@dataclass(frozen=True, slots=True)
class Transition:
    old: str
    new: str
    reason: str


def reconnect_delay(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0,
                    jitter: float = 0.2, rand: float = 0.5) -> float:
    """Capped exponential backoff: base·2^attempt, ± jitter (rand ∈ [0, 1)), never above cap_s.

    The jitter spreads reconnects of many cameras behind one recorder that came back at once.
    """
    delay = base_s * (2.0 ** min(attempt, 30))
    delay *= 1.0 + jitter * (2.0 * rand - 1.0)
    return max(0.0, min(cap_s, delay))


@dataclass
class CameraHealth:
    """The state of one camera; each method returns the transition it caused, or None."""

    stale_after_s: float = 5.0
    state: str = STALE
    reason: str = "connecting"
    last_frame_at: float | None = None
    reconnects: int = 0
    """times the camera came back after being stale (not counting the first connect)"""
    _ever_live: bool = False

    def _go(self, new: str, reason: str) -> Transition | None:
        if new == self.state:
            self.reason = reason
            return None
        t = Transition(self.state, new, reason)
        self.state, self.reason = new, reason
        return t

    def frame(self, now: float) -> Transition | None:
        """An acceptable frame arrived."""
        self.last_frame_at = now
        if self.state == ENDED:
            return None
        if self.state == STALE and self._ever_live:
            self.reconnects += 1
        self._ever_live = True
        return self._go(LIVE, "frames arriving")

    def failed(self, now: float, reason: str) -> Transition | None:
        """A read or an open failed: stale until a frame arrives again."""
        if self.state == ENDED:
            return None
        return self._go(STALE, reason)

    def ended(self, reason: str = "end of input") -> Transition | None:
        return self._go(ENDED, reason)

    def check(self, now: float) -> Transition | None:
        """Called periodically: a live camera without an acceptable frame for too long is stale."""
        if self.state == LIVE and self.last_frame_at is not None and now - self.last_frame_at > self.stale_after_s:
            return self._go(STALE, f"no usable frame for {now - self.last_frame_at:.1f}s")
        return None
