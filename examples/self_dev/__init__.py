"""Agents that work on this repository itself: an explainer and a README reviewer."""
