"""The ``brokeragents`` command: the only place that reads the environment or configures logging."""

from __future__ import annotations

import asyncio
import importlib
import logging.config
import os
import sys

import click

from brokeragents import __version__, commands
from brokeragents.keys import Keys
from brokeragents.urls import redact_url
from brokeragents.worker import WorkerSettings

REDIS_URL_HELP = "Redis URL (default: $REDIS_URL)."
logger = logging.getLogger("brokeragents.cli")


def _configure_logging(verbose: bool, level: str = "INFO") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
            "loggers": {"brokeragents": {"handlers": ["stderr"], "level": "DEBUG" if verbose else level}},
        }
    )


def _redis_url(option: str | None) -> str:
    url = option or os.environ.get("REDIS_URL")
    if not url:
        raise click.UsageError("No Redis URL: pass --redis-url or set REDIS_URL.")
    return url


@click.group()
@click.version_option(__version__, prog_name="brokeragents")
def main() -> None:
    """brokeragents: MiniAgents, distributed on Redis Streams."""


@main.command()
@click.argument("agents", nargs=-1, required=True, metavar="MODULE:ATTR...")
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True,
              help="Calls served at once by this process.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--name", help="Stable consumer name (default: $DYNO, else HOST-PID).")
@click.option("--worker-timeout-s", type=float, default=10.0, show_default=True,
              help="Heartbeat age after which a worker is dead and its calls are taken over.")
@click.option("--shutdown-grace-s", type=float, default=25.0, show_default=True,
              help="On SIGTERM, time given to calls in flight before they are left for takeover.")
@click.option("--key-prefix", default="ba", show_default=True, help="Prefix of every Redis key.")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535),
              help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics (off by default).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def worker(
    agents: tuple[str, ...],
    concurrency: int,
    redis_url: str | None,
    name: str | None,
    worker_timeout_s: float,
    shutdown_grace_s: float,
    key_prefix: str,
    metrics_port: int | None,
    verbose: bool,
) -> None:
    """Serve agents (MODULE:ATTR, a MiniAgent or a list of them) from this process."""
    _configure_logging(verbose)
    sys.path.insert(0, os.getcwd())  # like uvicorn: the current directory is importable
    try:
        served = [agent for path in agents for agent in commands.import_agents(path)]
    except commands.ImportStringError as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:ATTR") from exc
    settings = WorkerSettings(
        concurrency=concurrency,
        worker_timeout_s=worker_timeout_s,
        heartbeat_interval_s=min(2.0, worker_timeout_s / 3),
        shutdown_grace_s=shutdown_grace_s,
        key_prefix=key_prefix,
    )
    url = _redis_url(redis_url)
    logger.info("Connecting to %s (key prefix %r)", redact_url(url), key_prefix)
    if metrics_port is not None:
        from brokeragents import metrics

        metrics.serve(metrics_port)
        logger.info("Serving metrics on http://127.0.0.1:%d/metrics", metrics_port)
    sys.exit(commands.run_worker(served, redis_url=url, name=name or os.environ.get("DYNO"), settings=settings))


@main.command()
@click.argument("alias")
@click.argument("messages", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print each reply message as a JSON line once complete.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--timeout-s", type=float, default=30.0, show_default=True,
              help="How long to wait for a worker serving ALIAS.")
@click.option("--key-prefix", default="ba", show_default=True, help="Prefix of every Redis key.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE first, so the message classes it defines can be read back.")
def call(
    alias: str,
    messages: tuple[str, ...],
    as_json: bool,
    redis_url: str | None,
    timeout_s: float,
    key_prefix: str,
    imports: tuple[str, ...],
) -> None:
    """Trigger the agent ALIAS served by workers and print its reply tokens as they arrive."""
    _configure_logging(False, level="WARNING")
    sys.path.insert(0, os.getcwd())
    for module in imports:
        importlib.import_module(module)
    code = asyncio.run(
        commands.acall(
            alias,
            list(messages),
            redis_url=_redis_url(redis_url),
            as_json=as_json,
            timeout_s=timeout_s,
            key_prefix=key_prefix,
        )
    )
    sys.exit(code)


@main.command()
@click.option("--workers", "worker_count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes per agent.")
@click.option("-v", "--verbose", is_flag=True, help="Show worker logs.")
def demo(worker_count: int, verbose: bool) -> None:
    """Start a server (unless $REDIS_URL is set), workers and a streaming multi-agent pipeline."""
    from brokeragents import demo as demo_module

    _configure_logging(verbose, level="WARNING")
    sys.exit(demo_module.run_demo(redis_url=os.environ.get("REDIS_URL"), workers_per_agent=worker_count,
                                  verbose=verbose))


KEY_PREFIX_HELP = "Prefix of every Redis key (one per application)."


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--key-prefix", default="ba", show_default=True, help=KEY_PREFIX_HELP)
@click.option("--worker-timeout-s", type=float, default=10.0, show_default=True,
              help="Heartbeat age after which a worker counts as dead.")
def status(as_json: bool, redis_url: str | None, key_prefix: str, worker_timeout_s: float) -> None:
    """Agents, live workers, calls in flight and queued per agent, dead letters."""
    from brokeragents.status import arun_status

    _configure_logging(False, level="WARNING")
    sys.exit(asyncio.run(arun_status(redis_url=_redis_url(redis_url), key_prefix=_key_prefix(key_prefix),
                                     out=sys.stdout, err=sys.stderr, as_json=as_json,
                                     worker_timeout_s=worker_timeout_s)))


@main.command()
@click.argument("target", metavar="KEY_OR_ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--key-prefix", default="ba", show_default=True, help=KEY_PREFIX_HELP)
def inspect(target: str, as_json: bool, redis_url: str | None, key_prefix: str) -> None:
    """Show a message (key or hash key), a call (key or call id) or a sequence, as stored now."""
    from brokeragents.inspection import arun_inspect

    _configure_logging(False, level="WARNING")
    sys.exit(asyncio.run(arun_inspect(target, redis_url=_redis_url(redis_url), key_prefix=_key_prefix(key_prefix),
                                      out=sys.stdout, err=sys.stderr, as_json=as_json)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--key-prefix", default="ba", show_default=True, help=KEY_PREFIX_HELP)
@click.option("--max-calls", type=click.IntRange(min=1), help="Stop once this many calls started and replied.")
@click.option("--timeout-s", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option("--from-start", is_flag=True, help="Replay the calls still in the calls log first.")
def tail(as_json: bool, redis_url: str | None, key_prefix: str, max_calls: int | None, timeout_s: float | None,
         from_start: bool) -> None:
    """Print new calls and their reply tokens as they stream, until Ctrl-C."""
    from brokeragents.tailing import arun_tail

    _configure_logging(False, level="WARNING")
    try:
        code = asyncio.run(arun_tail(redis_url=_redis_url(redis_url), key_prefix=_key_prefix(key_prefix),
                                     out=sys.stdout, err=sys.stderr, as_json=as_json, max_calls=max_calls,
                                     timeout_s=timeout_s, from_start=from_start))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _key_prefix(prefix: str) -> str:
    try:
        return Keys(prefix).prefix
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-prefix") from exc


@main.command()
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. The dashboard has no login: keep it on loopback.")
@click.option("--redis-url", help=REDIS_URL_HELP + " A redis+cluster:// URL uses a Redis Cluster.")
@click.option("--key-prefix", default="ba", show_default=True, help=KEY_PREFIX_HELP)
@click.option("--worker-timeout-s", type=float, default=10.0, show_default=True,
              help="Heartbeat age after which a worker is shown as dead.")
def dashboard(port: int, host: str, redis_url: str | None, key_prefix: str, worker_timeout_s: float) -> None:
    """Serve a live web page of agents, workers, calls, the call graph and reply tokens."""
    try:
        from brokeragents.dashboard import run_dashboard
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc

    _configure_logging(False, level="WARNING")
    url = _redis_url(redis_url)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"Warning: the dashboard has no login and listens on {host}.", err=True)

    def announce(page_url: str) -> None:
        click.echo(f"brokeragents dashboard on {page_url} (Redis {redact_url(url)}, prefix {key_prefix})", err=True)

    from brokeragents.store import RedisUnavailableError
    from brokeragents.urls import scrub

    try:
        code = run_dashboard(redis_url=url, host=host, port=port, key_prefix=_key_prefix(key_prefix),
                             worker_timeout_s=worker_timeout_s, announce=announce)
    except (RedisUnavailableError, OSError) as exc:  # no Redis, or the port is taken
        raise click.ClickException(scrub(str(exc), url)) from exc
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
