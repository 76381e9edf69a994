"""The model is told the motion (issue 16.6), seen where it matters: on the provider's side. The real
schedule stage sends tasks with and without motion to the simulated provider (tools.llm_sim), and its
`GET /requests` log shows what each request's prompt said."""

from __future__ import annotations

import pytest

from hazardctl.prompt import MOTION_PROMPTS, PROMPTS
from tests.test_schedule_prompt import moving
from tests.test_schedule_stage import keys_for, run_stage, sim_keys, tasks
from tools.llm_sim import SimConfig, SimServer

SAID = {
    "en": "object 1 (car) approaches object 0 (person) at 140 px/s, time to collision 1.2 s",
    "zh": "目标 1（car）正以 140 像素/秒 接近目标 0（person），碰撞时间 1.2 秒",
}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_provider_is_told_the_motion_and_a_task_without_it_gets_todays_prompt(tmp_path, language):
    plain, cued = tasks(3)[1], moving(tasks(1)[0])
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:0.02", port=0)) as sim:
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 1), [cued, plain], language=language)
        prompts = [next(t["text"] for t in r["texts"] if t["role"] == "user") for r in sim.requests()]
    assert not dead and [r["status"] for r in results] == ["ok", "ok"]
    told = [p for p in prompts if SAID[language] in p]
    assert len(prompts) == 2 and len(told) == 1  # the cued task's request, and only that one
    other = next(p for p in prompts if p is not told[0])
    assert PROMPTS[language].template.split("{objects}")[0] in other  # today's opening, no motion section
    assert "approaches" not in other and "接近" not in other
    version = {r["task_id"]: r["prompt_version"] for r in results}
    assert version[cued.task_id] == MOTION_PROMPTS[language].version  # results say which prompt asked
    assert version[plain.task_id] == PROMPTS[language].version
