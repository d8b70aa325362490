"""Network transplanting: the core library (no server, no Ray, no object store needed)."""
