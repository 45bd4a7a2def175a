"""Our side of each case, run by the harness as ``python -m bench.client SUBCOMMAND ...``.

Each subcommand does one measured run and prints ``RESULT bench=... key=value`` lines in the
baselines' format, so the harness treats our runs and the baselines' runs alike.

* ``inproc``: producer -> relay -> relay -> consumer in one process (twin of
  ``b7_miniagents_chain.py``), in memory or connected to Redis (every promise mirrored).
* ``chain``: 1 or 3 hops through worker processes (twin of ``stream_chain.py``); the workers
  must be serving already.
* ``scale``: many concurrent calls to workers.
* ``memory``: Redis memory per streaming token and per finished message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time
from typing import Any

from bench.common import percentile, result_line

TOKEN = "tok_"
ERROR_LIMIT = 200  # failed Redis reads/writes the framework may log before a scale run gives up


def _latency_fields(latencies_ns: list[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {
        "p50_ms": percentile(ordered, 50) / 1e6,
        "p99_ms": percentile(ordered, 99) / 1e6,
        "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
    }


def _client_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _aconsume(replies: Any) -> tuple[list[int], int, int]:
    """Iterate every token of every reply; return latencies, first token ts and last receive time."""
    latencies: list[int] = []
    first_ts = 0
    last_ns = 0
    async for message_promise in replies:
        async for token in message_promise:
            last_ns = time.monotonic_ns()
            ts = token.ts
            if not first_ts:
                first_ts = ts
            latencies.append(last_ns - ts)
    return latencies, first_ts, last_ns


# --- inproc ---------------------------------------------------------------------------------------


async def _ainproc(n: int, mode: str, rate: float, url: str | None) -> dict[str, float]:
    from bench.apps.chain import producer_agent, relay_agent
    from brokeragents import MiniAgents

    mini_agents = MiniAgents(redis_url=url, remote_calls="never") if url else MiniAgents()
    async with mini_agents:
        t0 = time.monotonic_ns()
        replies = relay_agent.trigger(relay_agent.trigger(producer_agent.trigger(n=n, mode=mode, rate=rate)))
        latencies, _first_ts, _last = await _aconsume(replies)
        t1 = time.monotonic_ns()
    t2 = time.monotonic_ns()  # the context has written everything to Redis
    if len(latencies) != n:
        raise RuntimeError(f"received {len(latencies)} tokens, expected {n}")
    return {"tok_s": n / ((t1 - t0) / 1e9), "exit_ms": (t2 - t1) / 1e6, **_latency_fields(latencies)}


def cmd_inproc(args: argparse.Namespace) -> None:
    backend = "redis" if args.redis_url else "memory"
    for mode in args.modes.split(","):
        n = args.paced_n if mode == "paced" else args.n
        res = asyncio.run(_ainproc(n, mode, args.rate, args.redis_url))
        print(result_line(f"inproc_{mode}_{backend}", n=n, **res), flush=True)


# --- chain ----------------------------------------------------------------------------------------


async def _achain(hops: int, n: int, mode: str, rate: float, url: str) -> dict[str, float]:
    from bench.apps.chain import producer_agent, relay_b_agent, relay_c_agent
    from brokeragents import MiniAgents

    async with MiniAgents(redis_url=url, remote_calls="always"):
        cpu0 = _cpu_s()
        t0 = time.monotonic_ns()
        replies = producer_agent.trigger(n=n, mode=mode, rate=rate)
        if hops == 3:
            replies = relay_c_agent.trigger(relay_b_agent.trigger(replies))
        elif hops != 1:
            raise ValueError("hops must be 1 or 3")
        latencies, first_ts, last_ns = await _aconsume(replies)
    cpu_s = _cpu_s() - cpu0  # the caller's CPU for this call, context exit included
    if len(latencies) != n:
        raise RuntimeError(f"received {len(latencies)} tokens, expected {n}")
    return {
        # The baselines' definition: N / (last token received - first token made).
        "tok_s": n / ((last_ns - first_ts) / 1e9),
        # Including the call itself (inbox entry, worker pick-up, reply stream set-up).
        "call_tok_s": n / ((last_ns - t0) / 1e9),
        "first_token_ms": (first_ts - t0) / 1e6,
        "caller_cpu_us_per_token": cpu_s / n * 1e6,
        **_latency_fields(latencies),
    }


def cmd_chain(args: argparse.Namespace) -> None:
    res = asyncio.run(_achain(args.hops, args.n, args.mode, args.rate, args.redis_url))
    print(result_line(f"chain{args.hops}_{args.mode}", n=args.n, **res), flush=True)


# --- scale ----------------------------------------------------------------------------------------


class _ErrorWatch(logging.Handler):
    """Counts the framework's warnings about failed Redis reads and writes (it retries them)."""

    def __init__(self, limit: int) -> None:
        super().__init__(logging.WARNING)
        self.limit = limit
        self.count = 0
        self.pool_exhausted = 0  # of which redis-py's "Too many connections" (pool at max_connections)
        self.last = ""
        self.exceeded = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed" in message:
            self.count += 1
            self.pool_exhausted += "Too many connections" in message
            self.last = message
            if self.count >= self.limit:
                self.exceeded.set()


async def _awatchdog(watch: _ErrorWatch) -> None:
    """Give up (exit 3) once the framework logged too many failed reads/writes: it would retry forever."""
    await watch.exceeded.wait()
    print(f"gave up after {watch.count} failed Redis reads/writes, the last: {watch.last}", file=sys.stderr,
          flush=True)
    os._exit(3)  # the context would keep retrying its writes at exit; nothing else to clean up


async def _ascale(alias: str, calls: int, n: int, mode: str, rate: float, url: str) -> dict[str, float]:
    from bench.apps.chain import producer_agent
    from brokeragents import MiniAgents

    agent = producer_agent.fork(alias=alias)  # called by alias: the workers serving it run it

    async def one_call() -> tuple[int, int]:
        started = time.monotonic_ns()
        tokens = 0
        async for message_promise in agent.trigger(n=n, mode=mode, rate=rate):
            async for _token in message_promise:
                tokens += 1
        return tokens, time.monotonic_ns() - started

    watch = _ErrorWatch(ERROR_LIMIT)
    logging.getLogger("brokeragents").addHandler(watch)
    watchdog = asyncio.get_running_loop().create_task(_awatchdog(watch))
    async with MiniAgents(redis_url=url, remote_calls="always"):
        cpu0 = _cpu_s()
        t0 = time.monotonic_ns()
        results = await asyncio.gather(*(one_call() for _ in range(calls)))
        t1 = time.monotonic_ns()
        cpu_s = _cpu_s() - cpu0
    watchdog.cancel()
    total = sum(tokens for tokens, _ in results)
    if total != calls * n:
        raise RuntimeError(f"received {total} tokens, expected {calls * n}")
    durations = sorted(duration for _, duration in results)
    elapsed_s = (t1 - t0) / 1e9
    return {
        "calls_s": calls / elapsed_s,
        "tok_s": total / elapsed_s,
        "elapsed_s": elapsed_s,
        "call_p50_ms": percentile(durations, 50) / 1e6,
        "call_p99_ms": percentile(durations, 99) / 1e6,
        "client_rss_mb": _client_peak_rss_mb(),
        "caller_cpu_ms_per_call": cpu_s / calls * 1000,
        "retried_errors": float(watch.count),  # failed Redis reads/writes the framework retried
        "pool_exhausted_errors": float(watch.pool_exhausted),
    }


def cmd_scale(args: argparse.Namespace) -> None:
    res = asyncio.run(_ascale(args.alias, args.calls, args.n, args.mode, args.rate, args.redis_url))
    print(result_line(f"scale_c{args.calls}", n=args.n, calls=args.calls, **res), flush=True)


# --- memory ---------------------------------------------------------------------------------------


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


async def _astreaming_memory(url: str, streams: int, warmup: int, n: int, rate: float) -> dict[str, float]:
    """used_memory per token of messages that are still streaming (open, not finished).

    ``streams`` messages stream at once, each at ``rate`` (at LLM pace every token is its own
    stream entry). They all pause twice, after ``warmup`` tokens and after ``warmup + n``, and
    used_memory is read at both pauses: the difference is the cost of the ``n`` tokens in between
    alone, without each stream key's fixed cost (reported separately), i.e. the marginal cost per
    token of a long message. Many streams at once make the total dwarf used_memory's noise.
    """
    import redis

    from brokeragents import MiniAgents, TextMessage, TextToken

    probe = redis.Redis.from_url(url)
    pauses = (warmup, warmup + n)
    reached = [[asyncio.Event() for _ in range(streams)] for _ in pauses]
    resume = [asyncio.Event() for _ in pauses]

    def streamer(index: int) -> Any:
        async def tokens(_aux: dict[str, Any]) -> Any:
            t_first = time.monotonic_ns()
            for i in range(pauses[-1]):
                if i in pauses:
                    stage = pauses.index(i)
                    reached[stage][index].set()
                    await resume[stage].wait()
                    t_first = time.monotonic_ns() - int(i * 1e9 / rate)
                await asyncio.sleep(max(0.0, (t_first + i * 1e9 / rate - time.monotonic_ns()) / 1e9))
                yield TextToken(TOKEN)
            reached[-1][index].set()
            await resume[-1].wait()  # the message stays open (streaming) while we measure

        return tokens

    async def amemory_at(stage: int) -> tuple[int, int]:
        for event in reached[stage]:
            await event.wait()
        await store.aflush()
        entries = sum(probe.xlen(promise.redis_key) for promise in promises)
        return _used_memory(probe), entries

    async with MiniAgents(redis_url=url) as mini_agents:
        store = mini_agents.store
        assert store is not None
        await store.aflush()
        before = _used_memory(probe)
        promises = [TextMessage.promise(message_token_streamer=streamer(i)) for i in range(streams)]
        first, first_entries = await amemory_at(0)
        resume[0].set()
        second, second_entries = await amemory_at(1)
        usage = sum(probe.memory_usage(promise.redis_key, samples=0) or 0 for promise in promises)
        resume[1].set()
        await asyncio.gather(*promises)
    probe.close()
    total = streams * n
    return {
        "used_B_per_token": (second - first) / total,
        "used_B_per_entry": (second - first) / max(1, second_entries - first_entries),
        "tokens_per_entry": total / max(1, second_entries - first_entries),
        "used_B_per_token_with_keys": (second - before) / (streams * pauses[-1]),
        "memusage_B_per_token_with_keys": usage / (streams * pauses[-1]),
    }


def _string_usage(probe: Any, message: Any) -> int:
    """MEMORY USAGE of the message's JSON stored as a plain string key (for comparison only)."""
    key = "bench:as-string"
    probe.set(key, json.dumps(message.serialize(), ensure_ascii=False, separators=(",", ":")))
    usage = int(probe.memory_usage(key, samples=0) or 0)
    probe.delete(key)
    return usage


async def _afinished_memory(url: str, messages: int, tokens: int, rate: float) -> dict[str, float]:
    """What finished messages leave in Redis (while retained), per message, vs their JSON size."""
    import redis

    from brokeragents import MiniAgents, TextMessage, TextToken

    probe = redis.Redis.from_url(url)

    def streamer(index: int) -> Any:
        async def tokens_of(_aux: dict[str, Any]) -> Any:
            t_first = time.monotonic_ns()
            for i in range(tokens):
                await asyncio.sleep(max(0.0, (t_first + i * 1e9 / rate - time.monotonic_ns()) / 1e9))
                # 4-byte tokens like the baseline; the first makes each message (and hash) unique.
                yield TextToken(f"{index:04x}"[-4:] if i == 0 else TOKEN)

        return tokens_of

    async with MiniAgents(redis_url=url) as mini_agents:
        store = mini_agents.store
        assert store is not None
        await store.aflush()
        before = _used_memory(probe)
        promises = [TextMessage.promise(message_token_streamer=streamer(i)) for i in range(messages)]
        finished = await asyncio.gather(*promises)
        await store.aflush()
        await asyncio.sleep(0.2)  # let resolution handlers finish writing
        await store.aflush()
        after = _used_memory(probe)
        sample = promises[: min(50, messages)]
        stream_usage = [probe.memory_usage(p.redis_key, samples=0) or 0 for p in sample]
        hash_usage = [probe.memory_usage(store.keys.message(m.hash_key), samples=0) or 0 for m in finished[:50]]
        entries = [probe.xlen(p.redis_key) for p in sample]
        ttl = probe.ttl(sample[0].redis_key)
        string_usage = [_string_usage(probe, m) for m in finished[:50]]
        probe.xadd("bench:one-entry", {"t": TOKEN})  # what any 1-entry stream costs on this server
        one_entry = int(probe.memory_usage("bench:one-entry", samples=0) or 0)
        probe.delete("bench:one-entry")
    probe.close()
    json_sizes = [len(json.dumps(m.serialize(), ensure_ascii=False, separators=(",", ":")).encode()) for m in finished]
    json_size = sum(json_sizes) / len(json_sizes)
    per_message = (after - before) / messages
    return {
        "used_B_per_msg": per_message,
        "json_B_per_msg": json_size,
        "x_json": per_message / json_size,
        "token_stream_memusage_B": sum(stream_usage) / len(stream_usage),
        "hash_stream_memusage_B": sum(hash_usage) / len(hash_usage),
        "hash_only_x_json": sum(hash_usage) / len(hash_usage) / json_size,
        "as_string_memusage_B": sum(string_usage) / len(string_usage),
        "one_entry_stream_memusage_B": float(one_entry),
        "entries_per_msg": sum(entries) / len(entries),
        "ttl_s": float(ttl),
    }


def cmd_memory(args: argparse.Namespace) -> None:
    res = asyncio.run(_astreaming_memory(args.redis_url, args.streams, args.warmup, args.n, args.rate))
    print(result_line("memory_streaming", streams=args.streams, n=args.n, rate=args.rate, **res), flush=True)
    if args.messages:
        res = asyncio.run(_afinished_memory(args.redis_url, args.messages, args.tokens, args.msg_rate))
        print(result_line("memory_finished", messages=args.messages, tokens=args.tokens, **res), flush=True)


# --- command line ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    sub = parser.add_subparsers(dest="command", required=True)

    inproc = sub.add_parser("inproc")
    inproc.add_argument("--modes", default="burst,sleep0")
    inproc.add_argument("--n", type=int, default=20000)
    inproc.add_argument("--paced-n", type=int, default=3000)
    inproc.add_argument("--rate", type=float, default=1000)
    inproc.add_argument("--redis-url")
    inproc.set_defaults(func=cmd_inproc)

    chain = sub.add_parser("chain")
    chain.add_argument("--hops", type=int, choices=(1, 3), required=True)
    chain.add_argument("--mode", default="sleep0", choices=("burst", "sleep0", "paced"))
    chain.add_argument("--n", type=int, default=20000)
    chain.add_argument("--rate", type=float, default=0)
    chain.add_argument("--redis-url", required=True)
    chain.set_defaults(func=cmd_chain)

    scale = sub.add_parser("scale")
    scale.add_argument("--alias", default="PRODUCER_AGENT")
    scale.add_argument("--calls", type=int, required=True)
    scale.add_argument("--n", type=int, default=50)
    scale.add_argument("--mode", default="paced", choices=("burst", "sleep0", "paced"))
    scale.add_argument("--rate", type=float, default=500)
    scale.add_argument("--redis-url", required=True)
    scale.set_defaults(func=cmd_scale)

    memory = sub.add_parser("memory")
    memory.add_argument("--streams", type=int, default=10, help="messages streaming at once")
    memory.add_argument("--warmup", type=int, default=200, help="tokens of each before the window")
    memory.add_argument("--n", type=int, default=1000, help="tokens of each in the measured window")
    memory.add_argument("--rate", type=float, default=200, help="pace of each, tok/s")
    memory.add_argument("--messages", type=int, default=200, help="finished messages (0 = skip)")
    memory.add_argument("--tokens", type=int, default=200, help="tokens per finished message")
    memory.add_argument("--msg-rate", type=float, default=50, help="pace of each finished message")
    memory.add_argument("--redis-url", required=True)
    memory.set_defaults(func=cmd_memory)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
