"""Spend: the credits ledger, its reports, and the cost review of a plan (SPEC.md §10)."""
