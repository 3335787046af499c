"""The StarMagic API client: the only place that talks HTTP."""
