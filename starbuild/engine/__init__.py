"""Execution: the build narrative, the scheduler, the journal, verification and outcomes."""
