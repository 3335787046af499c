"""build()/abuild(): load → plan → run → publish → lock."""

from __future__ import annotations

from starbuild.config import Project
from starbuild.lockfile import LOCK_NAME, read_lock
from starbuild.planner import Plan, make_plan


def plan_project(project: Project, *, placeholder: bool = False, force=(), select=()) -> Plan:
    """The plan for a project against its own lockfile."""
    lock = read_lock(project.root / LOCK_NAME)
    return make_plan(project, lock, placeholder=placeholder, force=force, select=select)
