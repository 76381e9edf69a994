"""A simulated OpenAI-compatible vision LLM provider on loopback (`hazardctl llm-sim`); see docs/llm-sim.md.

Modules: `limits` (pure rate-limit rules), `answers` (answers, latency, faults), `config` (pydantic
config), `app` (the aiohttp app), `server` (run it: command, thread, or own process).
"""

from tools.llm_sim.config import SimConfig, SimKey, UnknownKey, build_config, generated_keys
from tools.llm_sim.server import SimProcess, SimServer, run, start_sim_process

__all__ = ["SimConfig", "SimKey", "SimProcess", "SimServer", "UnknownKey", "build_config", "generated_keys", "run",
           "start_sim_process"]
