"""The API-key pool: which key may send the next LLM request, and when (spec §6, issue 8).

Four parts, each one idea:
- `rates`: rate arithmetic of one sender (key or account): pacing under jitter, rpm window, tokens,
  AIMD and slow start;
- `pool`: the pool's rules: key states, the choice of key, what each outcome does to a key;
- `queue`: waiting tasks get keys by priority, then arrival, with deadlines (shedding);
- `shell`: the thin asyncio shell (`AsyncKeyPool`) around the pure parts.
- `cover`: when a schedule shard whose keys cannot serve hands its partitions to the others (issue 20.5).

The first three are pure, with the clock passed in; this module re-exports what callers import.
"""

from hazardctl.keypool.pool import (
    DISABLING,
    HEALTH_FAILURES,
    RATE_LIMITS,
    AccountLimits,
    KeyHealth,
    KeyLimits,
    KeyPool,
    KeyState,
    Lease,
    Outcome,
    PoolPolicy,
    account_warnings,
    over_claimed,
    should_retry,
)
from hazardctl.keypool.queue import CHANGED, NEW, RANKS, REFRESH, SHADOW, SUSPECT, URGENT, AcquireQueue, Waiter, rank
from hazardctl.keypool.rates import EPS, MIN_FACTOR, RPM_GUARD_S, RPM_WINDOW_S, Rate
from hazardctl.keypool.shell import AsyncKeyPool, Displaced, NoKeyInTime

__all__ = [
    "CHANGED", "NEW", "RANKS", "SHADOW", "SUSPECT", "Displaced", "rank", "DISABLING", "EPS", "HEALTH_FAILURES", "MIN_FACTOR", "RATE_LIMITS", "REFRESH", "RPM_GUARD_S",
    "RPM_WINDOW_S", "URGENT", "AccountLimits", "AcquireQueue", "AsyncKeyPool", "KeyHealth", "KeyLimits",
    "KeyPool", "KeyState", "Lease", "NoKeyInTime", "Outcome", "PoolPolicy", "Rate", "Waiter",
    "account_warnings", "over_claimed", "should_retry",
]
