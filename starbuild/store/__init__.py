"""Storage: the object store, the versioned asset folder and the lockfile."""
