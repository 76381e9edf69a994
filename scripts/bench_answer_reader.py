#!/usr/bin/env python
"""Micro-benchmark: reading a model's answer, the reader before issue 12 vs the tolerant reader.

The claim to check: a conforming answer costs what it cost before (the strict path is one
`orjson.loads` and one pydantic validation). `before` is the previous `hazardctl.prompt.parse_assessment`,
copied here verbatim as the baseline; `now` is `hazardctl.answers.read_answer`. Both run in the same
process, interleaved, on the same inputs; the figure is the median of `--repeats` rounds of `--n` calls.
Drifted answers are shown for information (the old reader rejected most of them).

Usage: .venv/bin/python scripts/bench_answer_reader.py [--n 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from pydantic import ValidationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hazardctl.answers import BadResponse, read_answer  # noqa: E402
from hazardctl.messages import RiskAssessment  # noqa: E402
from tests.test_schedule_stage import tasks  # noqa: E402

# ---- the reader before issue 12 (hazardctl/prompt.py at f739d86), verbatim but for its name ----
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*(.*?)\s*```\s*$", re.S)


def parse_before(text, task):
    if not text or not text.strip():
        raise BadResponse("empty reply")
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1)
    if not body.startswith("{"):
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise BadResponse("no JSON object in the reply")
        body = body[start:end + 1]
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise BadResponse(f"invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise BadResponse("the reply is JSON but not an object")
    if isinstance(data.get("level"), str):
        data["level"] = data["level"].strip().lower()
    if isinstance(data.get("risk_types"), str):
        data["risk_types"] = [data["risk_types"]]
    try:
        ra = RiskAssessment.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise BadResponse(f"{where}: {first['msg']}") from None
    members = {o.object_id for o in task.objects} or set(task.group.member_ids)
    ra.danger_object_ids = [i for i in ra.danger_object_ids if i in members]
    ra.risk_types = [r.strip()[:80] for r in ra.risk_types if r.strip()][:3]
    return ra
# ---------------------------------------------------------------------------------------------------


CONFORMING = ('{"level":"medium","risk_types":["tailgating","abrupt lane change"],"description":"Tailgating observed: '
              'a road user is closer than is safe; worth an operator\'s attention.","confidence":0.81,'
              '"danger_object_ids":[0,1]}')
DRIFTED = {
    "fenced": "```json\n" + CONFORMING + "\n```",
    "synonyms": CONFORMING.replace('"level"', '"risk_level"').replace('"risk_types"', '"riskTypes"'),
    "think + prose": "<think>The car is close behind.</think>\nHere is my answer: " + CONFORMING,
    "zh": '{"风险等级":"中","风险类型":["跟车过近"],"描述":"后车跟得太近。","置信度":0.8,"危险对象":[0,1]}',
}


def per_call_us(fn, text, task, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(text, task)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    task = tasks(1)[0]
    now = lambda text, t: read_answer(text, t, "stop")  # noqa: E731
    assert parse_before(CONFORMING, task) == now(CONFORMING, task).assessment
    before, after = [], []
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        before.append(per_call_us(parse_before, CONFORMING, task, args.n))
        after.append(per_call_us(now, CONFORMING, task, args.n))
    b, a = statistics.median(before), statistics.median(after)
    print(f"conforming answer, median of {args.repeats} x {args.n} calls (same process, interleaved):")
    print(f"  before issue 12 (strict reader)   {b:7.2f} us/answer")
    print(f"  now (tolerant reader, strict path){a:7.2f} us/answer   ratio {a / b:.2f}")
    print("drifted answers (information; 'rejected' = the old reader threw the answer away):")
    for name, text in DRIFTED.items():
        try:
            parse_before(text, task)
            old = f"{per_call_us(parse_before, text, task, args.n // 4):7.2f} us"
        except BadResponse:
            old = "rejected  "
        rules = ",".join(now(text, task).rules)
        print(f"  {name:14s} before {old}   now {per_call_us(now, text, task, args.n // 4):7.2f} us  ({rules})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
