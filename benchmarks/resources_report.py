"""BENCHMARKS.md text for ``benchmarks.resources`` (figures in, markdown out)."""

from __future__ import annotations

from typing import Any

RSS_TARGET_MIB = 1536
WAIT_CONNECTIONS_TARGET = 10
SOAK_GROWTH_TARGET_PCT = 10.0


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _rss(row: dict[str, Any]) -> list[str]:
    normal_ok = row["outcomes"].get("normal", {}).get("succeeded", 0)
    lines = [
        f"**Worker memory under a hostile mix.** One `imgq worker -c 256` with the default limits"
        f" (decode budget 512 MiB, 24 image loads per process, 4 per job, fetch pool 64 / 8 per"
        f" host), simulator latency 1 s, {row['jobs']} jobs submitted at once:",
        "",
        "| kind of job | outcomes |",
        "|---|---|",
    ]
    for kind, counts in row["outcomes"].items():
        shown = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
        lines.append(f"| {kind} | {shown} |")
    lines += [
        "",
        f"Worker RSS idle {row['idle_mib']:.0f} MiB, **peak {row['peak_mib']:.0f} MiB** (VmHWM);"
        f" worker alive at the end: {row['alive']}; wall {row['wall_s']:.0f} s.",
        f"Target peak < 1.5 GiB, no OOM, every normal job succeeds"
        f" ({normal_ok}/{row['normal']}): "
        + _verdict(row["peak_mib"] < RSS_TARGET_MIB and row["alive"] and normal_ok == row["normal"])
        + ".",
    ]
    return lines


def _keys(row: dict[str, Any]) -> list[str]:
    lines = [
        "Keys left in Redis by that run (every job finished; `SCAN` of the database):",
        "",
        "| key family | type | keys | without TTL | largest (bytes or members) |",
        "|---|---|---|---|---|",
    ]
    for f in row.get("keys", []):
        lines.append(
            f"| `{f['family']}` | {f['type']} | {f['keys']} | {f['no_ttl']} | {f['max']} |"
        )
    return lines


def _waiters(row: dict[str, Any]) -> list[str]:
    return [
        f"**Waiters on one API process.** {row['callers']:.0f} concurrent"
        f" `GET /v1/jobs/<id>?wait={row['wait_s']:g}` on one `imgq api` process; every job"
        " finished (result written + event published) once all callers were waiting:",
        "",
        "| callers | answered 200 `succeeded` | errors | peak Redis connections of the API"
        " | answer after finish p50 / p99 |",
        "|---|---|---|---|---|",
        f"| {row['callers']:.0f} | {row['ok']:.0f} | {row['errors']:.0f} |"
        f" **{row['peak_redis_connections']:.0f}** | {row['latency_p50_ms']:.0f} ms /"
        f" {row['latency_p99_ms']:.0f} ms |",
        "",
        f"Target <= {WAIT_CONNECTIONS_TARGET} Redis connections, every caller answered: "
        + _verdict(
            row["peak_redis_connections"] <= WAIT_CONNECTIONS_TARGET and row["ok"] == row["callers"]
        )
        + ". (Before: one pub/sub connection per waiter; 400 callers got 395 answers of"
        ' 500 "Too many connections", issue 10.)',
    ]


def _soak(row: dict[str, Any]) -> list[str]:
    cells = [
        f"| worker {i + 1} | {a:.0f} MiB | {e:.0f} MiB | {g:+.1f} % |"
        for i, (a, e, g) in enumerate(
            zip(row["after_warmup"], row["end"], row["growth_pct"], strict=True)
        )
    ]
    ok = all(g < SOAK_GROWTH_TARGET_PCT for g in row["growth_pct"]) and row["ok"] == row["jobs"]
    return [
        f"**Soak.** {row['jobs']:,} one-image jobs through 2 workers (`-c 64` each), simulator"
        f" latency 20 ms: {row['ok']:,} succeeded in {row['wall_s']:.0f} s. RSS after the first"
        f" {row['warmup']:,} jobs (warm-up) and at the end:",
        "",
        "| worker | after warm-up | end | growth |",
        "|---|---|---|---|",
        *cells,
        "",
        f"Target growth < {SOAK_GROWTH_TARGET_PCT:g} %: {_verdict(ok)}.",
    ]


def _sizing(row: dict[str, Any]) -> list[str]:
    return [
        f"**Redis memory per queued job** (`used_memory` delta over {row['jobs']:.0f} queued jobs,"
        " no worker): a job with an image URL"
        f" **{row['url_job_bytes'] / 1024:.1f} KiB** (broker message {row['message_bytes']:.0f} B"
        f" + result record {row['record_bytes']:.0f} B + job state, keys and Redis overhead);"
        + (
            f" with a 16 KiB prompt {row['prompt_16k_job_bytes'] / 1024:.1f} KiB;"
            if "prompt_16k_job_bytes" in row
            else ""
        )
        + f" a job with an uploaded image {row['upload_job_bytes'] / 1024:.1f} KiB for"
        f' {row["upload_image_bytes"] / 1024:.1f} KiB of image bytes. README "Sizing Redis"'
        " turns this into a formula.",
    ]


def render(rows: dict[str, Any], command: str, machine: str) -> str:
    out = [f"### Bounded resources (`{command}`)", "", f"{machine}.", ""]
    parts = (("rss", _rss), ("rss", _keys), ("waiters", _waiters), ("soak", _soak),
             ("sizing", _sizing))  # fmt: skip
    for name, part in parts:
        if name in rows:
            out += [*part(rows[name]), ""]
            if part is not _rss and "command" in rows[name]:
                out += [f"Command: `{rows[name]['command']}`.", ""]
    return "\n".join(out).rstrip() + "\n"
