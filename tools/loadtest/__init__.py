"""`hazardctl loadtest`: simulated cameras and a simulated LLM around the real stages (docs/loadtest.md).

Modules: `crops` (real JPEG crops), `scene` (one camera's road, pure; with --motion cues and hazards),
`hazards` (hazard recall, calls per camera-second), `cameras` (open-loop generator), `kafka_io` (fresh topics, readers), `procs` (child processes, CPU), `pipeline` (the
simulator and the stages), `chaos` (faults at a chosen second), `ledger` (every task's outcome),
`report` (figures, produced vs expected, identity, asserts), `live` (live view), `show` (console report), `plot` (PNG),
`sweep` (largest camera count meeting the asserts), `video` (cameras from a real video through the
real detect stage), `run` (one run, top to bottom).
"""

from tools.loadtest.run import Options, run

__all__ = ["Options", "run"]
