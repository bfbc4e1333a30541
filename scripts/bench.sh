#!/usr/bin/env bash
# Side-by-side benchmark: S1 (bulk small docs) and S2 (fan-out to 20 and 100 readers) against
# driftless (durable), driftless (durability = "none"), and the two peers in ../shared/peers
# (node-ref, samod-ref), interleaved, server pinned to core 0 and the load generator to core 1.
# Writes docs/benchmarks.md (via scripts/bench/report.py) from the raw results.
#
# Parameters (environment):
#   REPS=5            repetitions (each runs every server and scenario once, order rotated)
#   DOCS=10000        S1 documents
#   SMALL_DOCS=1000   also run S1 with this many documents (case "s1-small"; 0 to skip): the peers
#                     slow down as documents accumulate, so this shows them where they complete
#   READERS="20 100"  S2 reader counts
#   EDITS=200         S2 timed edits
#   S1=1              run S1 and S1-SMALL (0 to run only S2, and flood when asked)
#   S2=1              run S2 (0 to skip it, e.g. for a run of S3/S4/S6 only)
#   FLOOD=0           1: also run the flood scenario (issue #5) against driftless and driftless-none
#                     only (the peers have no rate limits to test): FLOOD_READERS=5 control readers,
#                     FLOODERS=8 flooding connections, FLOOD_IDLE=100 sockets that never join,
#                     FLOOD_EDITS=100 edits; the server runs with
#                     `[limits] messages_per_second = FLOOD_RATE` (default 200), burst the same
#   S6=0              1: also run S6 (idle connections, issue #9) for every server: S6_CONNECTIONS
#                     ("10000 15000") connections, each holding one synced doc, spread over
#                     S6_SOURCES (loopback source addresses), idle S6_IDLE=120 s; driftless runs with
#                     connection caps raised to 20000 (its defaults allow 256 per IP)
#   S4=0              1: also run S4 (restart and reconnect storm, issue #9) for every server: the
#                     generator seeds S4_SMALL=10000 small and S4_LARGE=10 large documents
#                     (S4_LARGE_OPS=20000 typed characters each), the server is restarted on the same
#                     data, then S4_CLIENTS=200 clients with S4_DOCS_PER_CLIENT=20 documents each
#                     reconnect at once
#   S3=0              1: also run S3 (hot long-history document, issue #9) for every server: a document
#                     of S3_OPS=260000 typed characters, typists at 6 chars/s with 4 readers each,
#                     S3_TYPISTS="1 2 4 8 16" (raised until p99 > 250 ms), S3_STEP_S=20 s per step
#   S5=0              1: also run S5 (provider burst, issue #9; driftless only, once per repetition):
#                     the bench starts the server itself with a bridge to the tests crate's
#                     burst_provider; S5_RECORDS=1000 events, S5_DELTAS=20000 changes per burst,
#                     S5_WINDOW=1000 unacknowledged at most, S5_READERS=20 S2 readers, S5_EDITS=100
#   TIMEOUT=120       per-phase timeout of the load generator, seconds
#   SERVERS="driftless driftless-none node-ref samod-ref"
#   SCRATCH=/tmp/driftless-bench   where the peers are copied and built, and data dirs live
#   PEERS=<repo>/../shared/peers   where the peers' sources are
#   OUT=docs/benchmarks.md         report ("-" to skip writing it)
#   DRIFTLESS_BIN=<path>           use this driftless binary instead of building a release one
#                                  (smoke runs on a busy machine use a debug build; say so)
# Quick run while developing: REPS=1 DOCS=1000 EDITS=50 scripts/bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-5}
DOCS=${DOCS:-10000}
SMALL_DOCS=${SMALL_DOCS:-1000}
READERS=${READERS:-"20 100"}
EDITS=${EDITS:-200}
TIMEOUT=${TIMEOUT:-120}
SERVERS=${SERVERS:-"driftless driftless-none node-ref samod-ref"}
S1=${S1:-1}
S2=${S2:-1}
FLOOD=${FLOOD:-0}
FLOOD_READERS=${FLOOD_READERS:-5}
FLOODERS=${FLOODERS:-8}
FLOOD_IDLE=${FLOOD_IDLE:-100}
FLOOD_EDITS=${FLOOD_EDITS:-100}
FLOOD_RATE=${FLOOD_RATE:-200}
S6=${S6:-0}
S6_CONNECTIONS=${S6_CONNECTIONS:-"10000 15000"}
S6_IDLE=${S6_IDLE:-120}
S6_SOURCES=${S6_SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4}
S4=${S4:-0}
S4_SMALL=${S4_SMALL:-10000}
S4_LARGE=${S4_LARGE:-10}
S4_LARGE_OPS=${S4_LARGE_OPS:-20000}
S4_CLIENTS=${S4_CLIENTS:-200}
S4_DOCS_PER_CLIENT=${S4_DOCS_PER_CLIENT:-20}
S3=${S3:-0}
S3_OPS=${S3_OPS:-260000}
S3_TYPISTS=${S3_TYPISTS:-"1 2 4 8 16"}
S3_STEP_S=${S3_STEP_S:-20}
S5=${S5:-0}
S5_RECORDS=${S5_RECORDS:-1000}
S5_DELTAS=${S5_DELTAS:-20000}
S5_WINDOW=${S5_WINDOW:-1000}
S5_READERS=${S5_READERS:-20}
S5_EDITS=${S5_EDITS:-100}
SCRATCH=${SCRATCH:-/tmp/driftless-bench}
PEERS=${PEERS:-$ROOT/../shared/peers}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}

COMMAND="REPS=$REPS DOCS=$DOCS SMALL_DOCS=$SMALL_DOCS READERS=\"$READERS\" EDITS=$EDITS TIMEOUT=$TIMEOUT S1=$S1 S2=$S2 FLOOD=$FLOOD S6=$S6 SERVERS=\"$SERVERS\" scripts/bench.sh"
[ "$S5" = 1 ] && COMMAND="S5=1 S5_RECORDS=$S5_RECORDS S5_DELTAS=$S5_DELTAS S5_WINDOW=$S5_WINDOW $COMMAND"
[ "$S6" = 1 ] && COMMAND="S6_CONNECTIONS=\"$S6_CONNECTIONS\" S6_IDLE=$S6_IDLE $COMMAND"
[ "$S4" = 1 ] && COMMAND="S4=1 S4_SMALL=$S4_SMALL S4_LARGE=$S4_LARGE S4_LARGE_OPS=$S4_LARGE_OPS S4_CLIENTS=$S4_CLIENTS S4_DOCS_PER_CLIENT=$S4_DOCS_PER_CLIENT $COMMAND"
[ "$S3" = 1 ] && COMMAND="S3=1 S3_OPS=$S3_OPS S3_TYPISTS=\"$S3_TYPISTS\" S3_STEP_S=$S3_STEP_S $COMMAND"
log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

mkdir -p "$SCRATCH"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$SCRATCH/results-$STAMP.jsonl"
: >"$RESULTS"

# --- build -----------------------------------------------------------------------------------
if [ -n "${DRIFTLESS_BIN:-}" ]; then
    BIN=$DRIFTLESS_BIN
    log "using $BIN (not building)"
else
    log "building driftless (release)"
    (cd "$ROOT" && cargo build --release -p driftless-server)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/driftless"
fi
if [ "$S5" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p driftless-tests --bin burst_provider)
fi
echo 'durability = "none"' >"$SCRATCH/durability-none.toml"
printf '[limits]\nmessages_per_second = %s\nmessage_burst = %s\n' "$FLOOD_RATE" "$FLOOD_RATE" \
    >"$SCRATCH/flood.toml"
printf 'durability = "none"\n[limits]\nmessages_per_second = %s\nmessage_burst = %s\n' \
    "$FLOOD_RATE" "$FLOOD_RATE" >"$SCRATCH/flood-none.toml"
S6_LIMITS='[limits]\nmax_connections_per_ip = 20000\nmax_connections_per_workspace = 20000\n'
printf "$S6_LIMITS" >"$SCRATCH/s6.toml"
printf "durability = \"none\"\n$S6_LIMITS" >"$SCRATCH/s6-none.toml"

for s in $SERVERS; do
    case $s in
    node-ref)
        if [ ! -d "$SCRATCH/node-ref/node_modules" ]; then
            log "copying and installing node-ref"
            rm -rf "$SCRATCH/node-ref"
            cp -r "$PEERS/node-ref" "$SCRATCH/node-ref"
            # The shipped lock file misses optional platform packages of cbor-extract, so `npm ci`
            # refuses it; fall back to `npm install` (same pinned top-level versions).
            (cd "$SCRATCH/node-ref" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) >&2
        fi
        ;;
    samod-ref)
        if [ ! -d "$SCRATCH/samod-ref" ]; then
            cp -r "$PEERS/samod-ref" "$SCRATCH/samod-ref"
        fi
        log "building samod-ref (release, its own target dir)"
        (cd "$SCRATCH/samod-ref" && CARGO_TARGET_DIR="$SCRATCH/samod-ref/target" cargo build --release) >&2
        ;;
    esac
done

# --- one run -----------------------------------------------------------------------------------
PORT=3200
SERVER_PID=

start_server() { # server datadir port [scenario]
    local s=$1 dir=$2 port=$3 scenario=${4:-}
    mkdir -p "$dir"
    local cfg=()
    case $s in
    driftless)
        [ "$scenario" = flood ] && cfg=(--config "$SCRATCH/flood.toml")
        [ "$scenario" = s6 ] && cfg=(--config "$SCRATCH/s6.toml")
        taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
            "${cfg[@]}" >"$dir/server.log" 2>&1 &
        ;;
    driftless-none)
        cfg=(--config "$SCRATCH/durability-none.toml")
        [ "$scenario" = flood ] && cfg=(--config "$SCRATCH/flood-none.toml")
        [ "$scenario" = s6 ] && cfg=(--config "$SCRATCH/s6-none.toml")
        taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
            "${cfg[@]}" >"$dir/server.log" 2>&1 &
        ;;
    node-ref)
        (cd "$SCRATCH/node-ref" && exec taskset -c "$SERVER_CPU" node ref-server.mjs "$port" "$dir/data") \
            >"$dir/server.log" 2>&1 &
        ;;
    samod-ref)
        taskset -c "$SERVER_CPU" "$SCRATCH/samod-ref/target/release/samod-ref" "$port" "$dir/data" \
            >"$dir/server.log" 2>&1 &
        ;;
    *)
        log "unknown server $s"
        return 1
        ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}

cpu_ticks() { # pid -> utime+stime in ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
status_kib() { # pid field
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

stop_server() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

run_one() { # rep server scenario readers-or-docs
    local rep=$1 s=$2 scenario=$3 readers=$4
    PORT=$((PORT + 1))
    local dir="$SCRATCH/run/$s-$scenario-$readers-$rep"
    rm -rf "$dir"
    local tag="$scenario"
    [ "$scenario" = s2 ] && tag="s2-$readers"
    [ "$scenario" = s1-small ] && tag="s1-small"
    [ "$scenario" = s6 ] && tag="s6-$readers"
    log "rep $rep: $s $tag (port $PORT)"
    if ! start_server "$s" "$dir" "$PORT" "$scenario"; then
        local err
        err=$(tail -c 400 "$dir/server.log" | tr '\n"\\' "  /")
        echo "{\"rep\":$rep,\"server\":\"$s\",\"case\":\"$tag\",\"bench\":{\"ok\":false,\"error\":\"server did not start: $err\"}}" >>"$RESULTS"
        stop_server "$SERVER_PID"
        return
    fi
    local pid=$SERVER_PID
    local rss0 ticks0
    rss0=$(status_kib "$pid" VmRSS)
    ticks0=$(cpu_ticks "$pid")
    local args=(--url "ws://127.0.0.1:$PORT" --label "$s" --server-pid "$pid" --phase-timeout-s "$TIMEOUT")
    if [ "$scenario" = s1 ]; then
        args+=(--scenario s1 --docs "$DOCS")
    elif [ "$scenario" = s1-small ]; then
        args+=(--scenario s1 --docs "$SMALL_DOCS")
    elif [ "$scenario" = s6 ]; then
        args+=(--scenario s6 --connections "$readers" --idle-s "$S6_IDLE" --source-addrs "$S6_SOURCES")
    elif [ "$scenario" = s3 ]; then
        args+=(--scenario s3 --s3-ops "$S3_OPS" --typists "$S3_TYPISTS" --step-s "$S3_STEP_S")
    elif [ "$scenario" = flood ]; then
        args+=(--scenario flood --readers "$FLOOD_READERS" --edits "$FLOOD_EDITS"
            --flooders "$FLOODERS" --idle "$FLOOD_IDLE")
    else
        args+=(--scenario s2 --readers "$readers" --edits "$EDITS")
    fi
    local line
    line=$(timeout $((TIMEOUT * 4 + 60 + S6_IDLE)) taskset -c "$BENCH_CPU" "$BIN" bench "${args[@]}" 2>"$dir/bench.err" | tail -n 1) || true
    if [ -z "$line" ]; then
        line="{\"ok\":false,\"error\":\"load generator produced no result: $(tail -c 300 "$dir/bench.err" | tr '\n"\\' "  /")\"}"
    fi
    local ticks1 hwm alive=true
    ticks1=$(cpu_ticks "$pid")
    hwm=$(status_kib "$pid" VmHWM)
    kill -0 "$pid" 2>/dev/null || alive=false
    stop_server "$pid"
    echo "{\"rep\":$rep,\"server\":\"$s\",\"case\":\"$tag\",\"server_alive\":$alive,\"server_cpu_s\":$(awk -v a="$ticks0" -v b="$ticks1" 'BEGIN{printf "%.2f", (b-a)/100}'),\"rss_start_kib\":${rss0:-0},\"hwm_kib\":${hwm:-0},\"bench\":$line}" >>"$RESULTS"
    echo "$line" >&2
    rm -rf "$dir/data"
}

# S4: seed, restart the server on the same data, then the reconnect storm. One result line (case
# "s4"); a failed seed is reported as the run's failure.
run_s4() { # rep server
    local rep=$1 s=$2
    PORT=$((PORT + 1))
    local dir="$SCRATCH/run/$s-s4-$rep"
    rm -rf "$dir"
    log "rep $rep: $s s4 seed (port $PORT)"
    local fail=
    if ! start_server "$s" "$dir" "$PORT"; then
        fail="server did not start: $(tail -c 300 "$dir/server.log" | tr '\n"\\' "  /")"
    fi
    local common=(--label "$s" --phase-timeout-s "$TIMEOUT" --state-file "$dir/s4.jsonl"
        --small-docs "$S4_SMALL" --large-docs "$S4_LARGE" --large-ops "$S4_LARGE_OPS"
        --clients "$S4_CLIENTS" --docs-per-client "$S4_DOCS_PER_CLIENT")
    local seed=
    if [ -z "$fail" ]; then
        seed=$(timeout $((TIMEOUT * 3 + 60)) taskset -c "$BENCH_CPU" "$BIN" bench --url "ws://127.0.0.1:$PORT" \
            --scenario s4-seed --server-pid "$SERVER_PID" "${common[@]}" 2>"$dir/seed.err" | tail -n 1) || true
        echo "$seed" >&2
        case $seed in
        *'"ok":true'*) ;;
        *) fail="seed: ${seed:-no result: $(tail -c 300 "$dir/seed.err" | tr '\n"\\' "  /")}" ;;
        esac
    fi
    stop_server "$SERVER_PID"
    if [ -n "$fail" ]; then
        fail=$(printf '%s' "$fail" | tr '"\\' "'/")
        echo "{\"rep\":$rep,\"server\":\"$s\",\"case\":\"s4\",\"bench\":{\"ok\":false,\"error\":\"$fail\"}}" >>"$RESULTS"
        return
    fi
    # The restart: a new process on the same data directory.
    PORT=$((PORT + 1))
    log "rep $rep: $s s4 restart and reconnect (port $PORT)"
    if ! start_server "$s" "$dir" "$PORT"; then
        echo "{\"rep\":$rep,\"server\":\"$s\",\"case\":\"s4\",\"bench\":{\"ok\":false,\"error\":\"server did not restart\"}}" >>"$RESULTS"
        stop_server "$SERVER_PID"
        return
    fi
    local pid=$SERVER_PID rss0 ticks0
    rss0=$(status_kib "$pid" VmRSS)
    ticks0=$(cpu_ticks "$pid")
    local line
    line=$(timeout $((TIMEOUT + 60)) taskset -c "$BENCH_CPU" "$BIN" bench --url "ws://127.0.0.1:$PORT" \
        --scenario s4 --server-pid "$pid" "${common[@]}" 2>"$dir/bench.err" | tail -n 1) || true
    if [ -z "$line" ]; then
        line="{\"ok\":false,\"error\":\"load generator produced no result: $(tail -c 300 "$dir/bench.err" | tr '\n"\\' "  /")\"}"
    fi
    local ticks1 hwm alive=true
    ticks1=$(cpu_ticks "$pid")
    hwm=$(status_kib "$pid" VmHWM)
    kill -0 "$pid" 2>/dev/null || alive=false
    stop_server "$pid"
    echo "{\"rep\":$rep,\"server\":\"$s\",\"case\":\"s4\",\"server_alive\":$alive,\"server_cpu_s\":$(awk -v a="$ticks0" -v b="$ticks1" 'BEGIN{printf "%.2f", (b-a)/100}'),\"rss_start_kib\":${rss0:-0},\"hwm_kib\":${hwm:-0},\"seed\":$seed,\"bench\":$line}" >>"$RESULTS"
}

run_s5() { # rep: S5 starts (and kill -9s) its own server, pinned like the others
    local rep=$1 dir="$SCRATCH/run/driftless-s5-$1" line
    rm -rf "$dir" && mkdir -p "$dir"
    log "rep $rep: driftless s5"
    line=$(timeout $((TIMEOUT * 6 + 60)) taskset -c "$BENCH_CPU" "$BIN" bench --url ws://unused \
        --scenario s5 --label driftless --readers "$S5_READERS" --edits "$S5_EDITS" \
        --phase-timeout-s "$TIMEOUT" --s5-provider-bin "${CARGO_TARGET_DIR:-$ROOT/target}/release/burst_provider" \
        --s5-server-cpus "$SERVER_CPU" --s5-dir "$dir" --s5-records "$S5_RECORDS" \
        --s5-deltas "$S5_DELTAS" --s5-window "$S5_WINDOW" 2>"$dir/bench.err" | tail -n 1) || true
    [ -z "$line" ] && line="{\"ok\":false,\"error\":\"load generator produced no result: $(tail -c 300 "$dir/bench.err" | tr '\n"\\' "  /")\"}"
    echo "{\"rep\":$rep,\"server\":\"driftless\",\"case\":\"s5\",\"bench\":$line}" >>"$RESULTS"
    echo "$line" >&2
    rm -rf "$dir/data"
}

# --- interleaved repetitions ------------------------------------------------------------------
read -r -a server_list <<<"$SERVERS"
n=${#server_list[@]}
for rep in $(seq 1 "$REPS"); do
    # Rotate the server order each repetition so no server always runs first or last.
    for i in $(seq 0 $((n - 1))); do
        s=${server_list[$(((i + rep - 1) % n))]}
        if [ "$S1" = 1 ]; then
            run_one "$rep" "$s" s1 0
            if [ "$SMALL_DOCS" -gt 0 ]; then
                run_one "$rep" "$s" s1-small 0
            fi
        fi
        if [ "$S2" = 1 ]; then
            for r in $READERS; do
                run_one "$rep" "$s" s2 "$r"
            done
        fi
        if [ "$FLOOD" = 1 ] && [ "${s#driftless}" != "$s" ]; then
            run_one "$rep" "$s" flood "$FLOOD_READERS"
        fi
        if [ "$S4" = 1 ]; then
            run_s4 "$rep" "$s"
        fi
        if [ "$S3" = 1 ]; then
            run_one "$rep" "$s" s3 0
        fi
        if [ "$S6" = 1 ]; then
            for c in $S6_CONNECTIONS; do
                run_one "$rep" "$s" s6 "$c"
            done
        fi
    done
    if [ "$S5" = 1 ]; then
        run_s5 "$rep"
    fi
done

log "results: $RESULTS"
if [ "$OUT" != "-" ]; then
    mkdir -p "$(dirname "$OUT")"
    python3 "$ROOT/scripts/bench/report.py" --results "$RESULTS" --out "$OUT" --command "$COMMAND" \
        --docs "$DOCS" --small-docs "$SMALL_DOCS" --edits "$EDITS" --reps "$REPS" --timeout "$TIMEOUT"
    log "wrote $OUT"
fi
