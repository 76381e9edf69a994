"""schedule's variants at run time (issue 22): which variant a task goes to, with which keys, model,
prompt and language; the HTTP clients they use; and what a reloaded key file changes.

`Variants` is built from one validated `KeysConfig`; a reload builds a new one and swaps it in, so a
task that already chose its variant finishes with it. Clients are kept by (key, base URL, secret)
across reloads: a rotated secret or a new address gets a new client, the old one serves its
in-flight calls and is closed at stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import openai

from hazardctl.keys import KeysConfig, LLMKey
from hazardctl.llm_client import open_clients
from hazardctl.prompt import prompt_for
from hazardctl.routing import Router


@dataclass(frozen=True)
class VariantPlan:
    """How one variant asks."""

    name: str
    only: frozenset[str] | None
    """the keys that serve it; None: every key"""
    language: str
    motion: bool
    """prompt_version motion (the motion prompt when the task carries motion) or plain"""
    model: str | None
    base_url: str | None
    response_format: str | None


class Variants:
    """The variants of one key file, with the router that picks them."""

    def __init__(self, keys: KeysConfig, language: str | None = None):
        self.keys = keys
        self.router = Router.from_keys(keys)
        self.plans: dict[str, VariantPlan] = {}
        all_keys = {k.name for k in keys.keys}
        for name in keys.used_variants():
            v = keys.variant(name)
            serving = frozenset(keys.variant_keys(name))
            lang = v.language or language or keys.language
            prompt_for(lang)  # an unknown language is a config error now, not at the first task
            self.plans[name] = VariantPlan(name, None if serving == all_keys else serving, lang,
                                           v.prompt_version == "motion", v.model, v.base_url, v.response_format)
        self._effective: dict[tuple[str, str], LLMKey] = {}

    def for_camera(self, camera_id: str) -> VariantPlan:
        return self.plans[self.router.variant_for(camera_id)]

    def shadow_for(self, task_id: str, primary: str) -> VariantPlan | None:
        name = self.router.shadow_for(task_id, primary)
        return self.plans[name] if name is not None else None

    def key_for(self, plan: VariantPlan, key: LLMKey) -> LLMKey:
        """The key as the variant uses it: its model, base URL and response format where it sets them."""
        ck = (plan.name, key.name)
        eff = self._effective.get(ck)
        if eff is None or eff.api_key != key.api_key:
            update = {f: getattr(plan, f) for f in ("model", "base_url", "response_format") if getattr(plan, f)}
            eff = key.model_copy(update=update) if update else key
            self._effective[ck] = eff
        return eff

    def describe(self) -> str:
        """One line: the routes and the shadow, for the log."""
        r = self.router
        shares = [f"{name} {share:g} %" for name, share in r.shares]
        rest = 100 - sum(s for _, s in r.shares)
        line = ", ".join([*shares, f"{r.default} {rest:g} % (default)"])
        if r.shadow:
            line += f"; shadow {r.shadow} on {r.shadow_share:g} % of tasks"
        return line


class Clients:
    """One OpenAI-compatible client per (key, base URL, secret), opened when first needed."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str], openai.AsyncOpenAI] = {}

    def get(self, key: LLMKey) -> openai.AsyncOpenAI:
        ck = (key.name, key.base_url, key.secret())
        client = self._clients.get(ck)
        if client is None:
            client = self._clients[ck] = open_clients([key])[key.name]
        return client

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()


def key_changes(old: KeysConfig, new: KeysConfig) -> tuple[list[str], list[str], list[str], list[str]]:
    """(added, removed, replaced, retuned) key names between two key files. Replaced: the same name with
    another secret or address (a new key behind an old name: it starts afresh). Retuned: other settings."""
    before = {k.name: k for k in old.keys}
    after = {k.name: k for k in new.keys}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    replaced = [n for n in after if n in before and (after[n].api_key != before[n].api_key
                                                        or after[n].base_url != before[n].base_url)]
    retuned = [n for n in after if n in before and n not in replaced and after[n] != before[n]]
    return added, removed, replaced, retuned
