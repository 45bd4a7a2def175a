"""Agents of the scale case: ``producer_agent`` under one alias per worker-set size.

With one alias per set (1, 2 and 4 workers), every set can run at the same time and the runs of
the three sets can be interleaved, while each call still goes only to the set being measured.
"""

from __future__ import annotations

from bench.apps.chain import producer_agent

scale_w1_agent = producer_agent.fork(alias="SCALE_W1_AGENT")
scale_w2_agent = producer_agent.fork(alias="SCALE_W2_AGENT")
scale_w4_agent = producer_agent.fork(alias="SCALE_W4_AGENT")

__all__ = ("scale_w1_agent", "scale_w2_agent", "scale_w4_agent")
