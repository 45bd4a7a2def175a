"""(g) Redis commands per second of an idle worker.

A worker serving one agent (and, in full mode, one serving three) is started and left idle; after
it is registered and has settled, ``INFO commandstats`` is read before and after a window, with
nothing else talking to the server. The delta minus our own probe (the one ``INFO`` in between)
is what the worker sent. Target: only blocking reads (XREADGROUP BLOCK) and heartbeats (the
ZADD/HSET/EXPIRE pipeline); anything else is listed by name.
"""

from __future__ import annotations

import time

import redis

from bench.common import Summary, Workers
from bench.harness import Context, Row, interleaved, summary

BLOCKING_READS = {"xreadgroup", "xread"}
HEARTBEAT = {"zadd", "hset", "expire"}
SETTLE_S = 1.0


def _commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_").lower(): int(v["calls"]) for name, v in stats.items()}


def _measure(url: str, targets: list[str], name: str, aliases: list[str], window_s: float) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    try:
        with Workers(url) as workers:
            workers.start(targets, name)
            workers.wait_served(aliases)
            time.sleep(SETTLE_S)
            before = _commandstats(client)  # our probe: one INFO, counted in the second read
            time.sleep(window_s)
            after = _commandstats(client)
    finally:
        client.close()
    delta = {cmd: after.get(cmd, 0) - before.get(cmd, 0) for cmd in after}
    delta["info"] = delta.get("info", 0) - 1
    rates = {cmd: count / window_s for cmd, count in delta.items() if count > 0}
    out = {f"cmd_{cmd}": rate for cmd, rate in rates.items()}
    out["total"] = sum(rates.values())
    out["reads"] = sum(rate for cmd, rate in rates.items() if cmd in BLOCKING_READS)
    out["heartbeat"] = sum(rate for cmd, rate in rates.items() if cmd in HEARTBEAT)
    out["other"] = out["total"] - out["reads"] - out["heartbeat"]
    return out


def run(ctx: Context) -> None:
    window_s = 3.0 if ctx.settings.quick else 10.0
    one = (["bench.apps.chain:producer_agent"], ["PRODUCER_AGENT"])
    three = (["bench.apps.chain:producer_agent", "bench.apps.chain:relay_b_agent", "bench.apps.chain:relay_c_agent"],
             ["PRODUCER_AGENT", "RELAY_B_AGENT", "RELAY_C_AGENT"])
    counter = iter(range(1_000_000))
    variants = {"one": lambda: _measure(ctx.url, one[0], f"bench.idle.{next(counter)}", one[1], window_s)}
    if not ctx.settings.quick:
        variants["three"] = lambda: _measure(ctx.url, three[0], f"bench.idle.{next(counter)}", three[1], window_s)
    # Idle rates are deterministic timers; a couple of rounds are enough even in full mode.
    res = interleaved(1 if ctx.settings.quick else 2, variants)
    for key, label in (("one", "1 agent"), ("three", "3 agents")):
        if key not in res:
            continue
        ctx.add(Row(f"g.{key}.total", "g", f"idle worker serving {label}: Redis commands/s", " cmd/s",
                    summary(res[key], "total"), higher_is_better=False))
        ctx.add(Row(f"g.{key}.other", "g", f"idle worker serving {label}: commands/s other than blocking reads "
                    "and heartbeats", " cmd/s", summary(res[key], "other"), higher_is_better=False,
                    target_value=0.0))
        commands = sorted({k for r in res[key] for k in r if k.startswith("cmd_")})
        breakdown = ", ".join(f"{k[4:].upper()} {Summary.of([r.get(k, 0.0) for r in res[key]]).median:.2f}/s"
                              for k in commands)
        ctx.note("g", f"{label}: {breakdown} (window {window_s:g} s, after {SETTLE_S:g} s settling).")
