"""The chain agents, in a worker that records its OpenTelemetry spans (tests/test_tracing.py).

On import it installs an SDK tracer provider whose exporter appends each finished span, as one
JSON line, to the file named by ``BA_TEST_SPANS_FILE``: how an application would set up its own
tracing in the module that defines its agents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from chain import chain_a, chain_b, chain_c
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as file:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                record = {
                    "name": span.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
                    "attributes": dict(span.attributes or {}),
                    "pid": os.getpid(),
                }
                file.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["BA_TEST_SPANS_FILE"])))
trace.set_tracer_provider(_provider)

__all__ = ("chain_a", "chain_b", "chain_c")
