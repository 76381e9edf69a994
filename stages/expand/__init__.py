"""expand: detection results → assessment tasks (spec §5).

Two engines, one gate (`hazardctl.gating`) and one task builder (`local.expand`):
- `local`: a pure-Python stage loop (stages/expand/local.py);
- `flink`: a PyFlink job (stages/expand/flink_job.py), run on a mini-cluster or a session cluster.
"""

from stages.expand.local import STAGE, ExpandConfig, Expander, expand, group_view, run

__all__ = ["STAGE", "ExpandConfig", "Expander", "expand", "group_view", "run"]
