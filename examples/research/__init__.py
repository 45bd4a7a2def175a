"""A research pipeline whose four agents run in four worker processes (see the root Procfile)."""
