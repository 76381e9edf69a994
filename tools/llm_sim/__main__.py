"""`python -m tools.llm_sim`: what start_sim_process() runs; the config arrives as one JSON line on stdin."""

import logging
import sys

from tools.llm_sim.config import SimConfig
from tools.llm_sim.server import run

if __name__ == "__main__":
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(SimConfig.model_validate_json(sys.stdin.buffer.readline()), stop_on_stdin_eof=True)
