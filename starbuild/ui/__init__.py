"""What people look at while they work: progress, watch and the gallery."""
