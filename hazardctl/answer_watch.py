"""Watching what each model answers: rules used, rejections, and a WARNING when a model drifts (issue 12).

An unusable answer is the model's fault, never the key's (the key pool counts it as a working
call). What an operator needs instead is to see a model drifting: `BadAnswerRate` (pure) keeps the
share of unusable answers among a model's last `window` answers and says when it rises above the
threshold or falls back; `AnswerWatch` (the shell) turns that into metrics and one log line.
No secret is involved: labels and lines carry the model name, the rule and the reason only.
"""

from __future__ import annotations

import logging
from collections import deque

from prometheus_client import Counter, Gauge

from hazardctl.keypool import Outcome

log = logging.getLogger("hazardctl.answers")

ANSWERS = Counter("hazardctl_answers_total", "Model answers by how they were read (strict, normalized, rejected)",
                  ["stage", "model", "reading"])
NORMALIZED = Counter("hazardctl_answer_normalized_total", "Answers read with a tolerant-reader rule, by rule",
                     ["stage", "model", "rule"])
REJECTED = Counter("hazardctl_answer_rejected_total", "Unusable answers by reason", ["stage", "model", "reason"])
BAD_RATIO = Gauge("hazardctl_answer_bad_ratio", "Share of unusable answers among the model's last answers",
                  ["stage", "model"])


class BadAnswerRate:
    """Share of unusable answers among the last `window`; `add` returns "above"/"below" on a crossing."""

    def __init__(self, threshold: float, window: int = 50, min_answers: int = 10):
        self.threshold, self.min_answers = threshold, min_answers
        self.recent: deque[bool] = deque(maxlen=window)
        self.bad = 0
        self.above = False

    @property
    def ratio(self) -> float:
        return self.bad / len(self.recent) if self.recent else 0.0

    def add(self, bad: bool) -> str | None:
        if len(self.recent) == self.recent.maxlen:
            self.bad -= self.recent[0]
        self.recent.append(bad)
        self.bad += bad
        if not self.above and len(self.recent) >= self.min_answers and self.ratio > self.threshold:
            self.above = True
            return "above"
        if self.above and self.ratio <= self.threshold / 2:  # hysteresis: no flapping at the threshold
            self.above = False
            return "below"
        return None


class AnswerWatch:
    """Counts every answer a stage reads, per model; logs a WARNING when a model's answers drift."""

    def __init__(self, stage: str, threshold: float = 0.2, window: int = 50, min_answers: int = 10):
        self.stage, self.threshold, self.window, self.min_answers = stage, threshold, window, min_answers
        self.rates: dict[str, BadAnswerRate] = {}

    def observe(self, model: str, outcome: Outcome, rules: tuple[str, ...] = (), reason: str | None = None) -> None:
        """One answer (OK or BAD_RESPONSE; other outcomes are not answers and are ignored)."""
        if outcome is Outcome.OK:
            ANSWERS.labels(self.stage, model, "normalized" if rules else "strict").inc()
            for r in rules:
                NORMALIZED.labels(self.stage, model, r).inc()
        elif outcome is Outcome.BAD_RESPONSE:
            ANSWERS.labels(self.stage, model, "rejected").inc()
            REJECTED.labels(self.stage, model, reason or "other").inc()
        else:
            return
        rate = self.rates.get(model)
        if rate is None:
            rate = self.rates[model] = BadAnswerRate(self.threshold, self.window, self.min_answers)
        change = rate.add(outcome is Outcome.BAD_RESPONSE)
        BAD_RATIO.labels(self.stage, model).set(rate.ratio)
        if change == "above":
            log.warning("%s: model %s: %d of its last %d answers were unusable (%.0f%%, warning above %.0f%%; "
                        "last reason: %s): the model's output has drifted; the keys are not at fault and stay in use",
                        self.stage, model, rate.bad, len(rate.recent), 100 * rate.ratio, 100 * self.threshold,
                        reason or "other")
        elif change == "below":
            log.info("%s: model %s: unusable answers back to %.0f%% of its last %d", self.stage, model,
                        100 * rate.ratio, len(rate.recent))
