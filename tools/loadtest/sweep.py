"""`--sweep cameras`: the largest camera count whose run meets every --assert, by bisection.

Start at --cameras; while a run passes, double (up to the count whose design rate is 1.5× the key
pool's capacity); then bisect between the last pass and the first failure until they are within
5 % (or 1 camera). Each step is a full short run (--duration, e.g. 20 s, plus ~10–20 s to start
and drain), so a sweep takes about (steps) × (duration + 20 s): 5–7 steps, 3–5 minutes at 20 s.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from rich.console import Console

from hazardctl.errors import ConfigError
from tools.loadtest.run import Options, run


def sweep(o: Options, console: Console) -> dict:
    if not o.asserts:
        raise ConfigError("--sweep cameras needs at least one --assert to decide what 'meets' means")
    out = Path(o.out or Path("loadtest-results") / time.strftime("sweep-%Y%m%d-%H%M%S"))
    ceiling = max(o.cameras, math.ceil(1.5 * o.keys * o.qps_per_key / o.rate))
    t0 = time.time()
    steps: list[dict] = []

    def attempt(n: int) -> bool:
        s = run(dataclasses.replace(o, cameras=n, out=out / f"cameras-{n}", live=False), console)
        steps.append({"cameras": n, "passed": s["passed"], "achieved_per_s": s["rates"]["achieved_per_s"],
                      "success": s["success"], "e2e_p95": s["latency"]["e2e"]["p95"], "out": str(out / f"cameras-{n}")})
        console.print(f"[bold]sweep[/]: {n} cameras → {'pass' if s['passed'] else 'FAIL'}", highlight=False)
        return s["passed"]

    good, bad = 0, None
    n = o.cameras
    while bad is None:
        if attempt(n):
            good = n
            if n >= ceiling:
                break
            n = min(ceiling, n * 2)
        else:
            bad = n
    while bad is not None and bad - good > max(1, int(good * 0.05)):
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    result = {"largest_passing": good, "first_failing": bad, "steps": steps, "took_s": round(time.time() - t0, 1)}
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    console.print(f"[bold]sweep[/]: largest camera count meeting {o.asserts}: {good}"
                  f"{f' (fails at {bad})' if bad else ' (the ceiling: no failure found)'}; {len(steps)} runs in "
                  f"{result['took_s']:.0f} s; {out / 'sweep.json'}", highlight=False)
    return result
