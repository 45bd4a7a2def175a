"""Work around the XREADGROUP ... BLOCK bugs of fakeredis 2.30-2.40.

In those versions ``StreamsCommandsMixin._xreadgroup`` gives up on its first blocking pass when
no COUNT is given, *after* it has already moved the entries into the consumer's PEL, so they are
lost to the reader. With a COUNT it never blocks at all, and without one it wakes up with nothing
on any unrelated write. See ``/work/shared/reference/embedded-redis.md`` section 1.

The fix: always read with ``first_pass=False`` (which returns whatever is there), and when the
call is a blocking one and found nothing, return ``None``, which tells fakeredis' blocking loop to
keep waiting. ``first_pass=True`` only ever comes from ``_blocking()``; its later passes run with
the socket's ``_blocked`` flag set, so together they identify a blocking call.

The patch must run in the process that owns the ``FakeServer``.
"""

from __future__ import annotations

from typing import Any

from fakeredis.commands_mixins.streams_mixin import StreamsCommandsMixin

_MARKER = "_brokeragents_xreadgroup_patched"


def apply() -> None:
    """Patch ``StreamsCommandsMixin._xreadgroup`` once; later calls do nothing."""
    if getattr(StreamsCommandsMixin, _MARKER, False):
        return
    original = StreamsCommandsMixin._xreadgroup

    def _xreadgroup(
        self: StreamsCommandsMixin,
        consumer_name: bytes,
        group_params: list[Any],
        count: int | None,
        noack: bool,
        min_idle_time: int | None,
        first_pass: bool,
    ) -> dict[bytes, Any] | None:
        is_blocking_call = first_pass or bool(getattr(self, "_blocked", False))
        result = original(self, consumer_name, group_params, count, noack, min_idle_time, False)
        if is_blocking_call and not result:
            return None  # nothing to deliver yet: keep blocking
        return result

    StreamsCommandsMixin._xreadgroup = _xreadgroup  # type: ignore[method-assign]
    setattr(StreamsCommandsMixin, _MARKER, True)
