"""The ``brokeragents`` command: the only place that reads the environment or configures logging."""

from __future__ import annotations

import asyncio
import logging.config
import os
import sys

import click

from brokeragents import __version__, commands
from brokeragents.worker import WorkerSettings

REDIS_URL_HELP = "Redis URL (default: $REDIS_URL)."


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
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def worker(
    agents: tuple[str, ...],
    concurrency: int,
    redis_url: str | None,
    name: str | None,
    worker_timeout_s: float,
    shutdown_grace_s: float,
    key_prefix: str,
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
    sys.exit(commands.run_worker(served, redis_url=url, name=name or os.environ.get("DYNO"), settings=settings))


@main.command()
@click.argument("alias")
@click.argument("messages", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print each reply message as a JSON line once complete.")
@click.option("--redis-url", help=REDIS_URL_HELP)
@click.option("--timeout-s", type=float, default=30.0, show_default=True,
              help="How long to wait for a worker serving ALIAS.")
def call(alias: str, messages: tuple[str, ...], as_json: bool, redis_url: str | None, timeout_s: float) -> None:
    """Trigger the agent ALIAS served by workers and print its reply tokens as they arrive."""
    _configure_logging(False, level="WARNING")
    code = asyncio.run(
        commands.acall(alias, list(messages), redis_url=_redis_url(redis_url), as_json=as_json, timeout_s=timeout_s)
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


if __name__ == "__main__":  # pragma: no cover
    main()
