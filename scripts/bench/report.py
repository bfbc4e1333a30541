#!/usr/bin/env python3
"""Aggregates scripts/bench.sh results (one JSON object per run) into docs/benchmarks.md.

Medians with min-max over the completed runs of each (server, case); ratios of driftless (durable
and durability = none) against every peer that completed the case; failures with their error text.
"""
import argparse
import datetime
import json
import platform
import statistics
import subprocess
from collections import defaultdict

LABELS = {
    "driftless": "driftless (durable, fsync)",
    "driftless-none": "driftless (`durability = \"none\"`)",
    "node-ref": "node-ref (automerge-repo 2.5.6, no fsync)",
    "samod-ref": "samod-ref (samod 0.16, no fsync)",
}
OURS = ["driftless", "driftless-none"]
NOTES_MARKER = "<!-- notes: everything below this line is kept when report.py regenerates the file -->"
PEERS = ["node-ref", "samod-ref"]


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{nproc} CPUs ({model}), {mem}, Linux {platform.release()}"


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def summary(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "-", None
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits), med
    return f"{fmt(med, digits)} ({fmt(min(values), digits)}-{fmt(max(values), digits)})", med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--small-docs", type=int, default=0)
    ap.add_argument("--edits", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--timeout", type=int, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    runs = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))

    by = defaultdict(list)
    for r in runs:
        by[(r["case"], r["server"])].append(r)
    servers = [s for s in LABELS if any(k[1] == s for k in by)]
    order = {"s1": 0, "s1-small": 1}
    cases = sorted({k[0] for k in by if k[0] != "s5"}, key=lambda c: (order.get(c, 2), len(c), c))  # s5: own block

    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Produced by `scripts/bench.sh` (load generator: `driftless bench`, see `server/src/bench/`).")
    w("Rerun with `scripts/bench.sh` (full: 5 repetitions, 10k docs, 200 edits; about 40 minutes on 2 cores) or "
      "a quick check with `REPS=1 DOCS=1000 EDITS=50 scripts/bench.sh`. The raw results (one JSON "
      "object per run) are kept in `$SCRATCH/results-*.jsonl` (default `/tmp/driftless-bench`).")
    w("")
    w(f"- Command: `{args.command}`")
    w(f"- Machine: {machine()}")
    w(f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- Repetitions: {args.reps}, interleaved (each repetition runs every server and case once, "
      "server order rotated); a fresh server process and data directory per run")
    w("- Server pinned to core 0 (`taskset -c 0`), load generator to core 1; both on loopback")
    w(f"- Per-phase timeout of the load generator: {args.timeout} s (a phase that does not finish "
      "is a failed run)")
    w("- Figures: median over the completed runs, (min-max) when more than one; server CPU is "
      "utime+stime of the server process over the whole run (from `/proc/PID/stat`), peak RSS is "
      "`VmHWM` at the end of the run")
    if args.note:
        w("")
        w(args.note)
    w("")

    medians = {}

    def by_case(case):
        return [r for k, rs in by.items() if k[0] == case for r in rs]

    def ok_runs(case, server):
        return [r for r in by.get((case, server), []) if r["bench"].get("ok")]

    for case in cases:
        if case in ("s1", "s1-small"):
            n = args.docs if case == "s1" else args.small_docs
            w(f"## {case.upper()}: bulk small docs (N = {n:,} contact docs, window 500, "
              "one connection)")
            w("")
            w("Acknowledged: the server's sync message reports our heads (driftless: after the "
              "fsynced commit; the peers: in memory, saved later without fsync). Fetched: a fresh "
              "client `request`s every document and holds the creator's heads.")
            w("")
            w("| server | ok runs | acknowledged docs/s | fetched docs/s | server CPU s (run) | "
              "server CPU us/doc (create) | peak RSS MiB | RSS growth KiB/doc |")
            w("|---|---|---|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                ok = ok_runs(case, s)
                ack, ack_m = summary([r["bench"].get("ack_docs_per_s") for r in ok])
                # Runs that timed out in the create phase: their rate over the time they had.
                partial = [r["bench"]["acked"] / args.timeout for r in all_runs
                           if not r["bench"].get("ok") and r["bench"].get("acked")
                           and r["bench"].get("ack_docs_per_s") is None]
                if partial:
                    p_txt, p_m = summary(partial)
                    medians[(case, s, "ack_partial")] = p_m
                    ack = (ack + "; " if ok else "") + f"timed out: {p_txt} over {args.timeout} s"
                fetch, fetch_m = summary([r["bench"].get("fetch_docs_per_s") for r in ok])
                cpu, _ = summary([r.get("server_cpu_s") for r in ok], 1)
                per_doc = [r["bench"]["ack_server_cpu_s"] * 1e6 / r["bench"]["docs"]
                           for r in ok if r["bench"].get("ack_server_cpu_s") is not None]
                cpu_doc, _ = summary(per_doc)
                hwm, _ = summary([r.get("hwm_kib", 0) / 1024 for r in ok], 1)
                growth, _ = summary([(r.get("hwm_kib", 0) - r.get("rss_start_kib", 0))
                                     / r["bench"]["docs"] for r in ok], 1)
                medians[(case, s, "ack")] = ack_m
                medians[(case, s, "fetch")] = fetch_m
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {ack} | {fetch} | {cpu} | "
                  f"{cpu_doc} | {hwm} | {growth} |")
            w("")
        elif case == "s4":
            w("## S4: restart and reconnect storm (issue #9)")
            w("")
            ex = next((r for r in by_case(case) if r["bench"].get("ok")), None)
            if ex:
                b = ex["bench"]
                w(f"Seeded {b.get('stored_docs', '?'):,} documents ({ex.get('seed', {}).get('large_docs', '?')} "
                  f"large, {ex.get('seed', {}).get('large_ops', '?'):,} typed characters each), restarted the "
                  f"server on the same data, then {b.get('clients', '?')} clients with "
                  f"{b.get('docs_per_client', '?')} documents each ({b.get('requested_docs', '?'):,} distinct) "
                  "reconnected at once, each with a fresh sync state per document. In sync: the server's "
                  "message reports the client's heads. Bytes: WebSocket payload per document, both "
                  "directions. Loaded: `driftless_storage_loads_total` (driftless only).")
            w("")
            w("| server | ok runs | all in sync s | doc p50 ms | doc p99 ms | small doc bytes p50 | "
              "large doc bytes p50 | docs loaded | server CPU s | peak RSS MiB |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                if not all_runs:
                    continue
                ok = ok_runs(case, s)
                t, t_m = summary([r["bench"].get("all_in_sync_s") for r in ok], 2)
                p50, _ = summary([r["bench"].get("doc_sync_p50_ms") for r in ok], 1)
                p99, _ = summary([r["bench"].get("doc_sync_p99_ms") for r in ok], 1)
                sb, sb_m = summary([r["bench"].get("small_doc_bytes_p50") for r in ok])
                lb, _ = summary([r["bench"].get("large_doc_bytes_p50") for r in ok])
                loaded, _ = summary([r["bench"].get("docs_loaded") for r in ok])
                cpu, _ = summary([r["bench"].get("server_cpu_s") for r in ok], 2)
                hwm, _ = summary([r.get("hwm_kib", 0) / 1024 for r in ok], 1)
                medians[(case, s, "sync_time")] = t_m
                medians[(case, s, "small_bytes")] = sb_m
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {t} | {p50} | {p99} | {sb} | {lb} | "
                  f"{loaded} | {cpu} | {hwm} |")
            w("")
        elif case == "s3":
            w("## S3: hot long-history document (issue #9)")
            w("")
            w("One document of about 260k typed characters (one change each); typists type 6 characters "
              "per second each into it, with 4 readers per typist; the typist count is raised step by "
              "step. Latency of a keystroke: from the typist's commit to the last of its 4 readers "
              "having received it. Sustained: the most typists with p99 <= 250 ms.")
            w("")
            w("| server | ok runs | sustained typists | p99 ms at that step | steps (typists: p99 ms) |")
            w("|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                if not all_runs:
                    continue
                ok = ok_runs(case, s)
                k, k_m = summary([r["bench"].get("sustained_typists") for r in ok])
                p99, _ = summary([r["bench"].get("sustained_p99_ms") for r in ok], 1)
                steps = "; ".join(
                    ", ".join(f"{st['typists']}: {fmt(st.get('p99_ms'), 1)}" for st in r["bench"].get("steps", []))
                    for r in ok)
                medians[(case, s, "typists")] = k_m
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {k} | {p99} | {steps} |")
            w("")
        elif case.startswith("s6-"):
            w(f"## S6: {int(case.split('-', 1)[1]):,} idle connections (issue #9)")
            w("")
            w("Each connection joins and syncs one small document, then stays idle (answering the "
              "server's pings). RSS per connection: (server RSS at the end of the idle period, every "
              "connection still open - RSS before the first) / N. Idle CPU: server utime+stime over the idle period, percent of "
              "one core. Closed: connections the server ended while idle (a failed run).")
            w("")
            w("| server | ok runs | connections/s | RSS per connection KiB | idle CPU % | "
              "idle s | peak RSS MiB |")
            w("|---|---|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                if not all_runs:
                    continue
                ok = ok_runs(case, s)
                cps, _ = summary([r["bench"].get("connections_per_s") for r in ok])
                rss, rss_m = summary([r["bench"].get("rss_per_connection_kib") for r in ok], 1)
                cpu, cpu_m = summary([r["bench"].get("idle_cpu_percent") for r in ok], 2)
                idle = (ok or all_runs)[0]["bench"].get("idle_s", "?")
                hwm, _ = summary([r.get("hwm_kib", 0) / 1024 for r in ok], 1)
                medians[(case, s, "rss_conn")] = rss_m
                medians[(case, s, "idle_cpu")] = cpu_m
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {cps} | {rss} | {cpu} | {idle} | "
                  f"{hwm} |")
            w("")
        elif case == "flood":
            w("## Flood (issue #5): control client under a flood, driftless only")
            w("")
            w("While flooder connections send `sync` frames as fast as their sockets take them (far "
              "over `[limits] messages_per_second`) and idle sockets complete the WebSocket handshake "
              "and never `join`, a control client runs the S2 edit loop with a few readers. "
              "Latency columns as in S2 (arrival-based, then apply-inclusive).")
            w("")
            w("| server | ok runs | readers | flooders | idle | p50 ms | p99 ms | applied p50 ms | "
              "applied p99 ms | flood frames/s | server CPU ms/edit |")
            w("|---|---|---|---|---|---|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                if not all_runs:
                    continue
                ok = ok_runs(case, s)
                b0 = (ok or all_runs)[0]["bench"]
                p50, _ = summary([r["bench"].get("p50_ms") for r in ok], 2)
                p99, _ = summary([r["bench"].get("p99_ms") for r in ok], 2)
                a50, _ = summary([r["bench"].get("applied_p50_ms") for r in ok], 2)
                a99, _ = summary([r["bench"].get("applied_p99_ms") for r in ok], 2)
                fps, _ = summary([r["bench"].get("flood_frames_per_s") for r in ok], 0)
                cpu, _ = summary([r["bench"].get("server_cpu_ms_per_edit") for r in ok], 2)
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {b0.get('readers', '?')} | "
                  f"{b0.get('flooders', '?')} | {b0.get('idle', '?')} | {p50} | {p99} | {a50} | "
                  f"{a99} | {fps} | {cpu} |")
            w("")
        else:
            readers = case.split("-", 1)[1]
            w(f"## S2: live fan-out, 1 writer and {readers} readers on one doc, "
              f"{args.edits} edits")
            w("")
            w("Latency of an edit (p50/p99/max): from the writer's commit to the moment the last "
              "reader's frame that brought the edit came off its socket in the load generator "
              "(timestamped before decoding; each reader yields before applying so the others can "
              "stamp their frames first). Applied p50/p99: to the last reader having decoded and "
              "applied that frame, i.e. including the generator's own serial apply time on its one "
              "core (runs without this column predate the arrival measure and are apply-inclusive "
              "in p50/p99). The next edit starts once every reader has applied the previous one and "
              "at least 20 ms after it; 10 warm-up edits are not counted. Generator apply: the "
              "readers' summed decode+apply time per edit (median).")
            w("")
            w("| server | ok runs | p50 ms | p99 ms | max ms | applied p50 ms | applied p99 ms | "
              "server CPU ms/edit | peak RSS MiB | generator apply ms/edit |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for s in servers:
                all_runs = by.get((case, s), [])
                ok = ok_runs(case, s)
                p50, p50_m = summary([r["bench"].get("p50_ms") for r in ok], 2)
                p99, p99_m = summary([r["bench"].get("p99_ms") for r in ok], 2)
                mx, _ = summary([r["bench"].get("max_ms") for r in ok], 1)
                a50, _ = summary([r["bench"].get("applied_p50_ms") for r in ok], 2)
                a99, _ = summary([r["bench"].get("applied_p99_ms") for r in ok], 2)
                cpu, _ = summary([r["bench"].get("server_cpu_ms_per_edit") for r in ok], 2)
                hwm, _ = summary([r.get("hwm_kib", 0) / 1024 for r in ok], 1)
                gen, _ = summary([r["bench"].get("generator_apply_ms_per_edit_p50") for r in ok], 2)
                medians[(case, s, "p50")] = p50_m
                medians[(case, s, "p99")] = p99_m
                w(f"| {LABELS[s]} | {len(ok)}/{len(all_runs)} | {p50} | {p99} | {mx} | {a50} | "
                  f"{a99} | {cpu} | {hwm} | {gen} |")
            w("")

    # Ratios against peers that completed.
    w("## Ratios (medians; only against peers that completed the case)")
    w("")
    w("Throughput: driftless / peer (higher is better). Latency, memory per connection and idle "
      "CPU: peer / driftless (higher is "
      "better for driftless).")
    w("")
    w("| case | figure | " + " | ".join(f"{o} vs {p}" for o in OURS if o in servers
                                       for p in PEERS if p in servers) + " |")
    pairs = [(o, p) for o in OURS if o in servers for p in PEERS if p in servers]
    w("|---|---|" + "---|" * len(pairs))
    for case in [c for c in cases if c != "flood"]:
        if case.startswith("s1"):
            figs = [("ack", "acknowledged docs/s"), ("fetch", "fetched docs/s")]
        elif case.startswith("s6"):
            figs = [("rss_conn", "RSS per connection"), ("idle_cpu", "idle CPU")]
        elif case == "s4":
            figs = [("sync_time", "time to all in sync"), ("small_bytes", "bytes per small doc")]
        elif case == "s3":
            figs = [("typists", "sustained typists")]
        else:
            figs = [("p50", "p50"), ("p99", "p99")]
        for key, name in figs:
            cells = []
            for o, p in pairs:
                a, b = medians.get((case, o, key)), medians.get((case, p, key))
                partial = medians.get((case, p, key + "_partial"))
                if a is not None and b is None and partial:
                    # The peer's rate while it ran is at most what it would average over all N.
                    cells.append(f">= {a / partial:.1f}x (peer timed out; vs its partial rate)")
                elif a is None or b is None or a == 0 or b == 0:
                    cells.append("peer failed" if b is None and a is not None else "-")
                elif key in ("ack", "fetch", "typists"):
                    cells.append(f"{a / b:.1f}x")
                else:
                    cells.append(f"{b / a:.1f}x")
            w(f"| {case} | {name} | " + " | ".join(cells) + " |")
    w("")

    # Targets.
    w("## Targets (issues #4 and #9)")
    w("")

    def target_line(name, ok):
        return f"- {name}: **{'met' if ok else 'missed'}**" if ok is not None else \
            f"- {name}: not measured"

    ours = "driftless"
    a = medians.get(("s1", ours, "ack"))
    for peer, factor in (("node-ref", 3.0), ("samod-ref", 1.5)):
        if peer not in servers:
            continue
        b = medians.get(("s1", peer, "ack"))
        if a is None:
            w(target_line(f"S1 acknowledged docs/s >= {factor}x {peer} (durable)", None))
        elif b is None and medians.get(("s1", peer, "ack_partial")):
            pb = medians[("s1", peer, "ack_partial")]
            w(target_line(f"S1 acknowledged docs/s >= {factor}x {peer} (durable): {peer} timed "
                          f"out; against its rate before the timeout driftless is >= {a / pb:.1f}x",
                          a / pb >= factor))
        elif b is None:
            w(f"- S1 acknowledged docs/s >= {factor}x {peer} (durable): {peer} did not complete "
              "(see failures)")
        else:
            w(target_line(f"S1 acknowledged docs/s >= {factor}x {peer} (durable): {a / b:.1f}x",
                          a / b >= factor))
    p50, p99 = medians.get(("s2-100", ours, "p50")), medians.get(("s2-100", ours, "p99"))
    if p50 is not None:
        w(target_line(f"S2 100 readers p50 < 5 ms (durable): {p50:.2f} ms", p50 < 5))
        w(target_line(f"S2 100 readers p99 < 15 ms (durable): {p99:.2f} ms", p99 < 15))
    # Issue #9.
    t = medians.get(("s4", ours, "sync_time"))
    if t is not None:
        peer_times = [(p, medians.get(("s4", p, "sync_time"))) for p in PEERS if p in servers]
        done = [(p, v) for p, v in peer_times if v]
        if done:
            best_p, best = min(done, key=lambda pv: pv[1])
            w(target_line(f"S4 all in sync <= 0.5x the best peer's time: {t:.2f} s against "
                          f"{best_p} {best:.2f} s ({t / best:.2f}x)", t <= 0.5 * best))
        else:
            w(f"- S4 all in sync <= 0.5x the best peer's time: no peer completed ({t:.2f} s)")
        b = medians.get(("s4", ours, "small_bytes"))
        if b is not None:
            w(target_line(f"S4 an up-to-date (small) document < 1 KiB on the wire: {b:.0f} B", b < 1024))
        loaded = [(r["bench"].get("docs_loaded"), r["bench"].get("requested_docs"))
                  for r in ok_runs("s4", ours)]
        if loaded:
            w(target_line("S4 only requested documents loaded: " + ", ".join(
                f"{a:.0f} of {b} requested" for a, b in loaded if a is not None),
                all(a is not None and a <= b for a, b in loaded)))
    k = medians.get(("s3", ours, "typists"))
    if k is not None:
        ks = medians.get(("s3", "samod-ref", "typists"))
        if ks:
            w(target_line(f"S3 sustained typists >= 4x samod-ref: {k:.0f} against {ks:.0f}", k >= 4 * ks))
        else:
            w(f"- S3 sustained typists >= 4x samod-ref: samod-ref sustained none or did not run; "
              f"driftless sustains {k:.0f}")
    s6 = sorted((c for c in cases if c.startswith("s6-")), key=lambda c: int(c.split("-")[1]))
    if s6:
        c = s6[-1]
        rss, cpu = medians.get((c, ours, "rss_conn")), medians.get((c, ours, "idle_cpu"))
        n = int(c.split("-")[1])
        if rss is not None:
            w(target_line(f"S6 {n:,} connections: RSS per connection < 16 KiB: {rss:.1f} KiB", rss < 16))
        if cpu is not None:
            w(target_line(f"S6 {n:,} connections: idle CPU < 5%: {cpu:.2f}%", cpu < 5))
    w("")

    # S5 (provider burst, driftless only; the bench starts its own server: see server/src/bench/s5.rs).
    s5 = [r["bench"] for r in runs if r["case"] == "s5"]
    if s5:
        good = [b for b in s5 if b.get("ok")]
        b0 = s5[0]
        w(f"## S5: provider burst ({b0.get('deltas')} deltas over {b0.get('records')} records, "
          f"window {b0.get('window')}, bridge poll {b0.get('poll_ms')} ms, S2 with "
          f"{b0.get('readers')} readers during the burst)")
        w("")
        w("Durable delta: the bridge presented a sync token issued after it (the token is stored only "
          "once the listing's documents are fsynced). Ceiling: redb `Durability::Immediate` "
          f"transactions of {b0.get('ceiling_batch')} values x {b0.get('ceiling_value_bytes')} B on "
          "the same disk, measured first in each run.")
        w("")
        cols = [("durable deltas/s", "durable_deltas_per_s", 0), ("ceiling values/s", "ceiling_values_per_s", 0),
                ("ratio to ceiling", "ratio_to_ceiling", 3), ("S2 p50 ms", "s2_p50_ms", 2),
                ("S2 p99 ms", "s2_p99_ms", 2), ("server CPU us/delta", "server_cpu_us_per_delta", 0),
                ("acked at kill", "acked_at_kill", 0), ("missing after kill -9", "missing_after_kill", 0)]
        w("| ok runs | " + " | ".join(c[0] for c in cols) + " |")
        w("|---" * (len(cols) + 1) + "|")
        cells = [summary([b.get(k) for b in good], d)[0] for _, k, d in cols]
        w(f"| {len(good)}/{len(s5)} | " + " | ".join(cells) + " |")
        w("")
        rate = summary([b.get("ratio_to_ceiling") for b in good], 3)[1]
        p99 = summary([b.get("s2_p99_ms") for b in good], 2)[1]
        lost = max([b.get("missing_after_kill", 0) for b in good], default=None)
        w(target_line(f"S5 durable deltas/s >= 0.6x the Immediate batch ceiling: {fmt(rate, 3)}x",
                      None if rate is None else rate >= 0.6))
        w(target_line(f"S5 S2 p99 < 50 ms during the burst: {fmt(p99, 2)} ms", None if p99 is None else p99 < 50))
        w(target_line(f"S5 acknowledged deltas missing after kill -9: {lost}", None if lost is None else lost == 0))
        w("")

    # Failures.
    w("## Failures")
    w("")
    failures = defaultdict(list)
    for r in runs:
        if not r["bench"].get("ok"):
            failures[(r["server"], r["case"], r["bench"].get("error", "?"))].append(r["rep"])
    if not failures:
        w("None.")
    for (s, case, err), reps in sorted(failures.items()):
        w(f"- {s}, {case}, repetition(s) {', '.join(map(str, reps))}: `{err}`")
    w("")

    # Hand-written notes below the marker survive regeneration.
    notes = ""
    try:
        with open(args.out) as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    except OSError:
        pass
    text = "\n".join(out)
    if notes:
        text += "\n" + notes
    else:
        text += "\n" + NOTES_MARKER + "\n"
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
