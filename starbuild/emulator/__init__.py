"""An emulator of the StarMagic image API, in-process (ASGI) or served over HTTP.

Names are loaded on first use so that importing the CLI's ``emulator`` command stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Emulator", "EmulatorConfig", "Faults", "LedgerEntry", "ManualClock", "serve", "serve_in_thread"]

_HOMES = {
    "Emulator": "app", "LedgerEntry": "app",
    "EmulatorConfig": "config", "Faults": "config", "ManualClock": "config",
    "serve": "server", "serve_in_thread": "server",
}

if TYPE_CHECKING:
    from .app import Emulator, LedgerEntry
    from .config import EmulatorConfig, Faults, ManualClock
    from .server import serve, serve_in_thread


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
