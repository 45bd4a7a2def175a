"""``brokeragents dashboard``: a live web view of agents, workers, calls and their reply tokens.

Needs the ``dashboard`` extra (``pip install "brokeragents[dashboard]"``, which adds aiohttp).
The page is one static HTML file (``static/index.html``): no build step, nothing loaded from
outside. See docs/dashboard-and-cluster.md.
"""

from __future__ import annotations

try:
    from brokeragents.dashboard.app import DEFAULT_PORT, Dashboard, run_dashboard
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name != "aiohttp" and not (exc.name or "").startswith("aiohttp."):
        raise
    raise ImportError('The dashboard needs aiohttp: pip install "brokeragents[dashboard]"', name=exc.name) from exc

__all__ = ("DEFAULT_PORT", "Dashboard", "run_dashboard")
