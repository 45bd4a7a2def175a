"""(d) Redis memory: per token while a message streams, per finished message vs its JSON size.

Baseline: ``b8_memory.py`` (a stream of ``{t: "tok_"}`` entries: about 16 B/entry; a stream per
200-token message: about 5.9 KB/message; the same text as one string: about 1 KB).

Ours (``python -m bench.client memory``), in a connected context:

* streaming: messages of 4-byte tokens at LLM pace (200 tok/s each, so every token is its own
  stream entry: the worst case, nothing coalesces), measured with ``INFO memory`` ``used_memory``
  while they are still open, as the difference between two pauses (after 200 and after 1200
  tokens): the marginal cost per token of a long message. 20 stream at once so the total
  dwarfs used_memory's noise (client buffers). Tokens/entry is reported too.
* finished: 200-token messages (4-byte tokens, 50 tok/s each, streamed concurrently), measured
  after they finished, while retained (the finished-stream TTL has not run out). Everything they
  left in Redis (token stream and the message stored under its hash key) / their JSON size.
"""

from __future__ import annotations

from bench.common import run_baseline, run_client
from bench.harness import Context, Row, interleaved, summary

TARGET_B_PER_TOKEN = 24.0
TARGET_X_JSON = 2.0


def run(ctx: Context) -> None:
    s = ctx.settings
    # LLM pace (200 tok/s each): every token is its own stream entry, the worst case.
    streams, warmup, n_stream, stream_rate = (10, 100, 300, 200.0) if s.quick else (20, 200, 1000, 200.0)
    messages, tokens = (50, 200) if s.quick else (200, 200)
    msg_rate = 200 if s.quick else 50
    base_n = 2000 if s.quick else 20000
    base_messages = 100 if s.quick else 1000

    def baseline() -> dict[str, float]:
        args = ["--runs", "1", "--n", str(base_n), "--messages", str(base_messages), "--tokens", str(tokens)]
        return run_baseline("b8_memory.py", args, url=ctx.url, n=base_n)["memory"]

    def ours() -> dict[str, float]:
        ctx.server.flush()
        args = ["memory", "--streams", str(streams), "--warmup", str(warmup), "--n", str(n_stream),
                "--rate", f"{stream_rate:g}", "--messages", str(messages), "--tokens", str(tokens),
                "--msg-rate", f"{msg_rate:g}"]
        res = run_client(args, url=ctx.url)
        out = {f"s_{k}": v for k, v in res["memory_streaming"].items()}
        out.update({f"f_{k}": v for k, v in res["memory_finished"].items()})
        return out

    res = interleaved(s.runs, {"baseline": baseline, "ours": ours})
    base, mine = res["baseline"], res["ours"]

    def fmt(results: list[dict[str, float]], key: str, unit: str = "") -> str:
        return summary(results, key).fmt(unit)

    what = f"{streams} messages streaming at {stream_rate:g} tok/s each, used_memory per token"
    ctx.add(Row("d.streaming", "d", what, " B", summary(mine, "s_used_B_per_token"),
                summary(base, "one_stream_used_B_per_entry"), "raw stream {t: tok_}",
                higher_is_better=False, target_value=TARGET_B_PER_TOKEN))
    ctx.add(Row("d.finished", "d", f"finished {tokens}-token message, retained, used_memory per message", " B",
                summary(mine, "f_used_B_per_msg"), summary(base, "per_msg_streams_used_B_per_msg"),
                "raw stream per message", higher_is_better=False))
    ctx.add(Row("d.finished.x_json", "d", "finished message, retained: memory / its JSON size", "x",
                summary(mine, "f_x_json"), higher_is_better=False, target_value=TARGET_X_JSON,
                note="JSON = the serialized message"))
    ctx.note("d", f"streaming: {fmt(mine, 's_tokens_per_entry')} tokens/entry in the window "
                  f"({fmt(mine, 's_used_B_per_entry', ' B')} per entry). Counting each "
                  f"stream key's fixed cost too ({warmup} + {n_stream} tokens per message): used_memory "
                  f"{fmt(mine, 's_used_B_per_token_with_keys', ' B')} and MEMORY USAGE "
                  f"{fmt(mine, 's_memusage_B_per_token_with_keys', ' B')} per token. Baseline {{t: tok_}} "
                  f"stream: MEMORY USAGE {fmt(base, 'one_stream_memusage_B_per_entry', ' B')}; with a "
                  f"19-digit ts field: {fmt(base, 'one_stream_ts_used_B_per_entry', ' B')} used_memory.")
    ctx.note("d", f"finished: JSON size {fmt(mine, 'f_json_B_per_msg', ' B')} per message. What stays while "
                  f"retained: the token stream (MEMORY USAGE {fmt(mine, 'f_token_stream_memusage_B', ' B')}, "
                  f"{fmt(mine, 'f_entries_per_msg')} entries) and the message stored under its hash key "
                  f"(a 1-entry stream, MEMORY USAGE {fmt(mine, 'f_hash_stream_memusage_B', ' B')}); TTL "
                  f"{fmt(mine, 'f_ttl_s', ' s')}. Once the token stream is gone, the message alone costs "
                  f"{fmt(mine, 'f_hash_only_x_json', 'x')} its JSON size; its JSON as a plain string key "
                  f"would take {fmt(mine, 'f_as_string_memusage_B', ' B')} (MEMORY USAGE). On this server a stream "
                  f"holding the single entry {{t: tok_}} already takes "
                  f"{fmt(mine, 'f_one_entry_stream_memusage_B', ' B')}: its listpack node is preallocated "
                  "(stream-node-max-bytes).")
