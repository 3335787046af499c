"""Small wording helpers shared by the plan, progress and summary output."""

from __future__ import annotations


def credits_text(amount: float) -> str:
    """``1 credit``, ``0 credits``, ``2.5 credits``."""
    return f"{amount:g} credit" + ("" if amount == 1 else "s")
