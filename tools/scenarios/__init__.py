"""Street scenarios from simple physics, with detector noise and labelled hazards, as MOT sequences.

`physics` (boxes moving under constant velocity, braking, walking; the ground-truth TTC oracle),
`library` (the scenes: crossings at 20–60 km/h, cyclists, rear-end approaches, a car braking in
time, and calm scenes: a crowd, a parked row, parallel traffic, a queue at a crossing), `noise`
(±3 px jitter, 5 % missed boxes, id switches), `mot` (MOT-Challenge folders + labels.json).
`python -m tools.scenarios OUT` writes the library; scripts/bench_gate.py replays it (docs/gate.md).
"""
