"""Example programs; a package so that workers can serve ``examples.research.agents:...`` from the repository root."""
