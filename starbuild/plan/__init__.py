"""Planning: resolved specs, their hashes, and what a build would do. No network, no writes."""
