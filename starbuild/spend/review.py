"""The cost review of a plan: what a change will generate, reuse and cost, against the PR budget.

A stale asset whose spec already has a stored result (or a task paid for by an earlier run) is
"from cache": the planner marks it, and a build reuses it for 0 credits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starbuild.plan.planner import Plan, PlannedAsset, Status

_TEMPLATE_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


@dataclass
class Review:
    """A plan with its cache hits, the credits a build would reserve, and the per-PR budget."""

    plan: Plan
    cached: set[str] = field(default_factory=set)  # stale assets whose image the cache holds: 0 credits
    limit: float | None = None
    project_id: str = "."

    def considered(self) -> list[PlannedAsset]:
        """The assets a build would touch: stale selected ones, and the removed ones."""
        build = {a.name for a in self.plan.to_build()}
        removing = self.plan.selected is None  # a build of named assets removes nothing
        return [a for a in self.plan.assets if a.name in build or (removing and a.status == Status.REMOVED)]

    def paid(self) -> list[PlannedAsset]:
        return [a for a in self.plan.to_build() if a.name not in self.cached]

    @property
    def credits(self) -> float:
        return round(sum(a.credits for a in self.paid()), 4)

    @property
    def images(self) -> int:
        return sum(a.spec.n if a.spec else 1 for a in self.paid())

    @property
    def over_budget(self) -> bool:
        return self.limit is not None and self.credits > self.limit + 1e-9

    def budget_message(self) -> str:
        return (f"the plan would reserve about {self.credits:g} credits, over cost.max_credits_per_pr "
                f"{self.limit:g}; split the change or raise the budget")

    def groups(self) -> dict[str, list[PlannedAsset]]:
        """Considered assets by image group: the image key of the config they come from."""
        templates = _templates(self.plan)
        out: dict[str, list[PlannedAsset]] = {}
        for a in self.considered():
            out.setdefault(_group_of(a, templates), []).append(a)
        return out


def _templates(plan: Plan) -> list[tuple[str, re.Pattern]]:
    seen = {a.spec.template or a.name for a in plan.assets if a.spec}
    return [(t, _name_pattern(t)) for t in sorted(seen)]


def _name_pattern(template: str) -> re.Pattern:
    parts = _TEMPLATE_PART.split(template)
    return re.compile("^" + ".+".join(re.escape(p) for p in parts) + "$")


def _group_of(asset: PlannedAsset, templates: list[tuple[str, re.Pattern]]) -> str:
    if asset.spec:
        return asset.spec.template or asset.name
    # A removed asset: the image key whose names it fits, else its folder.
    fits = [t for t, pattern in templates if pattern.match(asset.name)]
    if fits:
        return max(fits, key=len)
    folder, _, _ = asset.name.rpartition("/")
    return f"{folder}/*" if folder else asset.name


def project_id(root: Path) -> str:
    """The project's folder relative to its git checkout (its name outside git): the comment's key."""
    root = root.resolve()
    for parent in (root, *root.parents):
        if (parent / ".git").exists():
            rel = root.relative_to(parent).as_posix()
            return rel if rel != "." else "."
    return root.name


def review_plan(project: Any, plan: Plan) -> Review:
    """The cost review of a project's plan (the planner has marked what the cache holds)."""
    limit = getattr(getattr(project.config, "cost", None), "max_credits_per_pr", None)
    return Review(plan, {a.name for a in plan.to_build() if a.from_cache}, limit, project_id(project.root))
