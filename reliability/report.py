"""RELIABILITY.md: the chaos table, the fuzz table, the seeded kill points, and the command that made them."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

from .chaos import SETTLE_S, ScenarioResult
from .fuzz.runner import FuzzResult
from .pipeline import GET_TIMEOUT_S

#: Per-backend partition results, measured by tests/multihost (not by this campaign), included as written.
PARTITIONS = Path(__file__).with_name("partitions")
_COLUMNS = """\
- **acked**: puts acknowledged (`ok` true); **refused**: put attempts that failed (retried; nothing acknowledged).
- **delivered**: acknowledged payloads a consumer read back byte-for-byte intact.
- **lost**: acknowledged payloads no consumer could read; **lost (reader killed)**: payloads whose consumer was
  killed while reading them and that its restarted successor no longer found (a consume-once read that was taken
  by the process that died: it cannot be told apart from a loss, so it is counted on its own).
- **dup**: payloads a second read found again after a delivery (consume-once), or after the consumer deleted them
  (connectors whose reads do not consume).  **corrupt**: read back with other bytes.
- **recover**: from the kill until a request put after it was acknowledged and read intact (reads of payloads lost in
  the kill, each waited out for {timeout} s, are not counted); for the coordinator, until the restarted coordinator
  published every consumer replica again.  p50 / max over the scenario's kills.
- **left after**: new `/dev/shm` entries, lock files, processes still alive and ports still listening once every
  process and server was closed or stopped; and pool bytes: at the end of the run, before closing, the bytes of this
  run's payloads the backend still holds plus what the stages' `health()` reports still in use or quarantined in
  their registered pools (a long-running stage would keep holding them), once memory that failed transfers may
  still write had its quarantine to be released and values a backend kept beyond their delete their TTL (up to
  {settle} s after the last request).  Goal: all 0."""


def render(
    chaos: Sequence[ScenarioResult],
    fuzz: Sequence[FuzzResult],
    failures: Sequence[str],
    command: str,
    seed: int,
    wall_s: float,
) -> str:
    """The whole RELIABILITY.md; ``failures`` are scenarios that could not run."""
    lines = [
        "# Reliability",
        "",
        "Produced by one command (the numbers below are from this run):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Seed **{seed}** (the same seed gives the same kill points and fuzz inputs). {_machine()}; "
        f"{wall_s / 60:.1f} min in all.",
        "",
    ]
    if failures:
        lines += ["**Scenarios that could not run:**", "", *(f"- {f}" for f in failures), ""]
    kills = [r for r in chaos if r.kind == "kill"]
    cuts = [r for r in chaos if r.kind == "partition"]
    nodes = [r for r in chaos if r.kind == "ray-node"]
    if kills:
        lines += _chaos_section(kills)
    if cuts:
        lines += _netsplit_section(cuts)
    if nodes:
        lines += _ray_node_section(nodes)
    if fuzz:
        lines += _fuzz_section(fuzz)
    lines += _partitions_section()
    lines += _soak_section()
    return "\n".join(lines) + "\n"


def _soak_section() -> list[str]:
    """The soak's section as ``python -m reliability soak`` last wrote it (it is not part of this run)."""
    from .soak_report import SECTION

    return [SECTION.read_text().strip(), ""] if SECTION.is_file() else []


def _partitions_section() -> list[str]:
    sections = [path.read_text().strip() for path in sorted(PARTITIONS.glob("*.md"))]
    if not sections:
        return []
    return ["## Partitions: a host cut off mid-transfer (tests/multihost)", "", *(f"{text}\n" for text in sections)]


def _cells(r: ScenarioResult) -> str:
    """The columns every chaos table shares, from ``requests`` to ``left after``."""
    recover = f"{statistics.median(r.recover_s):.2f} / {max(r.recover_s):.2f}" if r.recover_s else "-"
    lk = r.leaks
    lost = f"{r.lost} (by design)" if r.lost and r.loss_reason else str(r.lost)
    doubt = f"{r.lost_in_doubt} (by design)" if r.lost_in_doubt and r.doubt_reason else str(r.lost_in_doubt)
    left = f"{lk.shm_entries}, {lk.lock_files}, {lk.pool_bytes}, {lk.processes}, {lk.ports}"
    return (f"{r.requests} | {r.acked} | {r.refused} | {r.delivered} | {lost} | {doubt} | {r.duplicates} "
            f"| {r.corrupt} | {recover} | {left}")


def _points(results: Sequence[ScenarioResult]) -> list[str]:
    out = []
    for r in results:
        points = ", ".join(f"{k.request}:{k.phase}+{k.delay_ms:g}ms" + (f" for {k.duration_s:g}s" if k.duration_s
                                                                        else "") for k in r.kills)
        extra = "".join(f" {note}." for note in r.notes)
        left = f" Left: {', '.join(r.leaks.details)}." if r.leaks.details else ""
        out.append(f"- `{r.slug}` ({r.seconds:.0f} s): {points}.{extra}{left}")
    return out


def _netsplit_section(results: Sequence[ScenarioResult]) -> list[str]:
    from .netsplit import REREAD_S

    rows = [
        "| scenario | cut off | cuts | requests | acked | refused | delivered | lost | lost (reader killed) | dup "
        "| corrupt | recover p50 / max (s) | left after: /dev/shm, locks, pool bytes, processes, ports "
        "| longest put / get (s) | bound put / get (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        bounds = f"{r.put_bound_s:g} / {r.get_bound_s:g}" if r.put_bound_s and r.get_bound_s else "-"
        rows.append(f"| {r.transport} | {r.target} | {len(r.kills)} | {_cells(r)} "
                    f"| {r.longest_put_s:.2f} / {r.longest_get_s:.2f} | {bounds} |")
    return [
        "## Partitions across test hosts: a host cut off for 1-5 s during a put or a get",
        "",
        "Three test hosts (network namespaces on one bridge, `omni_core.testing.hosts`); the stages and servers run "
        "on them as the scenario's name says, and the chaos takes the named host's link down for a seeded 1-5 s "
        "(packets are lost, nothing is refused) during a put or a get, then heals it; nothing is restarted. Same "
        "columns as above, except: a read that found nothing while the network was cut is read again after it "
        f"healed, for up to {REREAD_S:.0f} s (the clients reconnect meanwhile; lost: that failed too); "
        "**recover** runs from the heal until a request put after it was "
        "acknowledged and read intact (for the coordinator's host: until a list it published after the heal named "
        "every consumer replica); **longest put / get**: the longest call of the scenario, from the command to the "
        "answer, against **bound**: what the connector's configured timeouts allow (a call past it hung). Ports of "
        "servers on test hosts are checked through their processes (the hosts are removed afterwards).",
        "",
        *rows,
        "",
        "### Cuts",
        "",
        "`request:phase+delay for duration`.",
        "",
        *_points(results),
        "",
    ]


def _kill_table_head(*extra: str) -> list[str]:
    """Header and alignment rows of a kill table: the common columns, then ``extra`` (numbers)."""
    names = ["scenario", "killed", "kills", "requests", "acked", "refused", "delivered", "lost",
             "lost (reader killed)", "dup", "corrupt", "recover p50 / max (s)",
             "left after: /dev/shm, locks, pool bytes, processes, ports", *extra]  # fmt: skip
    aligns = ["---", "---", *["---:"] * 10, "---", *["---:"] * len(extra)]
    return ["| " + " | ".join(names) + " |", "| " + " | ".join(aligns) + " |"]


def _ray_node_section(results: Sequence[ScenarioResult]) -> list[str]:
    from .raynode import HANG_S

    rows = _kill_table_head("longest run after its kill (s)")
    rows += [f"| {r.transport} | {r.target} | {len(r.kills)} | {_cells(r)} | {r.longest_get_s:.1f} |" for r in results]
    return [
        "## A Ray node killed during `omni run --launcher ray`",
        "",
        "A Ray cluster on three test hosts (`omni_ray.testing.RayTestCluster`); `omni run` drives the Ray example "
        "from host 1 with its thinker and vocoder there and a talker replica on each worker node (hosts 2 and 3), and "
        "one worker node's raylet is SIGKILLed after a seeded number of requests finished (its talker and its "
        "payload owner die with it). `omni run` does not replace a dead replica, so each kill has a run of its own and "
        "the node is started again between runs. Same columns as the first table, except: **acked** and "
        "**delivered** are what `omni run` verified (every payload put, each read intact exactly once, or the run "
        "fails naming the request; it retries no put, so **refused** is 0 unless a run failed); **recover** runs from "
        "the kill until `omni run` said every request re-routed from the dead talker had finished; **left after** "
        "counts, as processes, stage processes still alive and replica actors, placement groups and payload owners "
        f"still in the cluster 30 s after each run; a run still going {HANG_S:.0f} s after its kill hung.",
        "",
        *rows,
        "",
        "`request:node` (the kill after that many requests of the run had finished).",
        "",
        *_points(results),
        "",
    ]


def _chaos_section(results: Sequence[ScenarioResult]) -> list[str]:
    rows = _kill_table_head()
    for r in results:
        rows.append(f"| {r.transport} | {r.target} | {len(r.kills)} | {_cells(r)} |")
    columns = _COLUMNS.format(timeout=GET_TIMEOUT_S, settle=f"{SETTLE_S:.0f}")
    out = ["## Chaos: SIGKILL during a two-stage pipeline", "", *rows, "", columns, ""]
    reasons = [(r, r.lost, r.loss_reason) for r in results if r.lost and r.loss_reason]
    reasons += [(r, r.lost_in_doubt, r.doubt_reason) for r in results if r.lost_in_doubt and r.doubt_reason]
    if reasons:
        out += ["### Why these backends lose acknowledged payloads on these kills", ""]
        out += [f"- **{r.transport}, {r.target} killed** ({n} lost): {why}." for r, n, why in reasons]
        out.append("")
    out += ["### Kill points", "", "`request:phase+delay` (phase: during the put, during the read, or right after "
            "the put).", ""]
    out += _points(results)
    return [*out, ""]


def _fuzz_section(results: Sequence[FuzzResult]) -> list[str]:
    rows = [
        "| decoder | engine | inputs | accepted | rejected (clear error) | findings | slowest input (ms) "
        "| peak RSS (MiB) | time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        counts = (f"{r.accepted} | {r.rejected}" if r.engine == "mutation" else "- | -")
        slowest = f"{r.slowest_s * 1e3:.1f}" if r.engine == "mutation" else "-"
        rows.append(f"| {r.target} | {r.engine} | {r.inputs} | {counts} | {len(r.findings)} | {slowest} "
                    f"| {r.peak_rss_mib:.0f} | {r.seconds:.0f} |")
    out = [
        "## Fuzzing: every decoder that reads untrusted bytes",
        "",
        *rows,
        "",
        "A finding is an exception other than the decoder's own error type, a rejection whose message is empty or "
        "echoes more than 1000 characters of the input on one line, an input taking over 10 s, or one that raises "
        "the peak RSS by more than 40x its size (plus 64 MiB).  `mutation` is this package's seeded mutation engine "
        "(known-hostile inputs first, then mutants of valid inputs with each decoder's vocabulary); `atheris` is "
        "coverage-guided libFuzzer from PyPI, seeded with the same inputs and vocabulary; it stops at its first "
        "finding, so its input count is then lower.",
        "",
    ]
    findings = [(r, f) for r in results for f in r.findings]
    if findings:
        out += ["### Findings", ""]
        out += [f"- {r.target} ({r.engine}): {f['problem']} (input: `{f.get('reproducer')}`)" for r, f in findings]
        out.append("")
    return out


def _machine() -> str:
    import os

    return f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"
