"""starbuild: a declarative asset builder for StarMagic images.

The public API is loaded on first use, so that ``import starbuild`` (and ``starbuild --help``)
stays fast. The synchronous ``build()`` lives in ``starbuild.engine.build`` (the submodule's name would
shadow it here).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "BuildOptions", "BuildReport", "ConfigError", "Outcome", "Plan", "StarbuildError", "abuild",
    "load_config", "make_plan", "plan_project",
]

_HOMES = {
    "BuildOptions": "engine.build", "abuild": "engine.build", "plan_project": "engine.build",
    "BuildReport": "engine.outcome", "Outcome": "engine.outcome",
    "ConfigError": "errors", "StarbuildError": "errors",
    "load_config": "config.project", "make_plan": "plan.planner", "Plan": "plan.planner",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'starbuild' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"starbuild.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
