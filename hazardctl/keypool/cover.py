"""Shards that cover for each other (issue 20.5): when does a schedule shard hand its partitions over?

Pure, clock passed in. A shard whose keys cannot serve a task before its deadline (every key disabled,
or cooling longer than a task's deadline budget) is no use to the tasks of its partitions: it should
leave the consumer group so the healthy shards take them, and come back once a key can serve again.

- `serving_at`: when the pool's first key is open for ordinary tasks again (now if one is; None when only
  a probe can tell: every key disabled). Computed by `KeyPool.serving_at`.
- `Cover.update(now, serving_at, budget_s)`: "leave" after the pool was unable to serve within the
  budget for `hold_s` without a break (one bad second does not shuffle partitions); "rejoin" as soon
  as it can again. Both at most once per change, so the shell acts exactly on the edges.
- `Cover.probe_due(now, next_probe_at)`: out of the group no task reaches the pool, so nobody would
  probe a disabled key: the shell sends a probe of its own when one is due.
- `paced_room`: capacity pacing for shards of unequal capacity: a shard holds no more tasks than its
  open keys can serve within the budget (the rest stays in Kafka, counted as lag).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cover:
    hold_s: float = 1.0
    """the pool must be unable to serve for this long before the shard leaves"""
    out: bool = False
    """the shard has left its consumer group"""
    unservable_since: float | None = None
    leaves: int = 0
    rejoins: int = 0

    @staticmethod
    def servable(now: float, serving_at: float | None, budget_s: float) -> bool:
        """Can a task read now get a key before its deadline?"""
        return serving_at is not None and serving_at <= now + budget_s

    def update(self, now: float, serving_at: float | None, budget_s: float) -> str | None:
        """"leave", "rejoin" or None (no change)."""
        if self.servable(now, serving_at, budget_s):
            self.unservable_since = None
            if self.out:
                self.out = False
                self.rejoins += 1
                return "rejoin"
            return None
        if self.unservable_since is None:
            self.unservable_since = now
        if not self.out and now - self.unservable_since >= self.hold_s:
            self.out = True
            self.leaves += 1
            return "leave"
        return None

    def probe_due(self, now: float, next_probe_at: float | None) -> bool:
        """Out of the group with a disabled key whose probe is due: the shell probes it itself."""
        return self.out and next_probe_at is not None and next_probe_at <= now


def paced_room(open_qps: float, budget_s: float, holding: int, floor: int = 1) -> int:
    """How many more tasks a shard may take: what its open keys can send within one deadline budget
    (qps × budget), minus the tasks it already holds; at least `floor` in total, so a paced key still
    gets work."""
    cap = max(floor, int(open_qps * budget_s))
    return max(0, cap - holding)
