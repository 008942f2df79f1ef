#!/usr/bin/env bash
# relayq webhook benchmark: how fast a backlog of delivery events drains to
# a local receiver, and a receiver outage under load (nothing lost, order
# kept, daemon memory flat). Prints numbers; it is not a test.
#
# Cases (CASES="drain outage"):
#   drain   DRAIN_EVENTS messages (one recipient each) are delivered while the
#           receiver refuses every post (503), so their `delivered` events wait
#           in the outbox; then the receiver takes posts again and the time
#           from then to the last event taken gives events/s (batch_max
#           BATCH_MAX).
#   outage  mail is offered at OUTAGE_RATE msg/s for OUTAGE_LOAD seconds; the
#           receiver refuses posts for the first OUTAGE_DOWN seconds; then the
#           run waits (bounded) until every event arrived. Prints events
#           committed vs taken, duplicates, order errors (a message's events
#           must never go back: deferred before delivered), and the daemon's
#           RSS sampled every 10 s.
#
# Knobs: DRAIN_EVENTS=100000 BATCH_MAX=100 OUTAGE_RATE=200 OUTAGE_LOAD=660
#        OUTAGE_DOWN=600 SIZE=2048 SESSIONS=20 QUICK=1 (small numbers)
#        RQ_PORT=2621 SINK_PORT=2622 HOOK_PORT=2623 BUILD=1 KEEP=0
# Network: only 127.0.0.1 (delivery through a [[route]] to smtp-sink).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DRAIN_EVENTS=${DRAIN_EVENTS:-10000}; OUTAGE_LOAD=${OUTAGE_LOAD:-40}; OUTAGE_DOWN=${OUTAGE_DOWN:-20}
fi
CASES=${CASES:-"drain outage"}
DRAIN_EVENTS=${DRAIN_EVENTS:-100000}
BATCH_MAX=${BATCH_MAX:-100}
OUTAGE_RATE=${OUTAGE_RATE:-200}
OUTAGE_LOAD=${OUTAGE_LOAD:-660}
OUTAGE_DOWN=${OUTAGE_DOWN:-600}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-20}
RQ_PORT=${RQ_PORT:-2621}
SINK_PORT=${SINK_PORT:-2622}
HOOK_PORT=${HOOK_PORT:-2623}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
RELAYQ_BIN=${RELAYQ_BIN:-$ROOT/target/release/relayq}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
for v in DRAIN_EVENTS BATCH_MAX OUTAGE_RATE OUTAGE_LOAD OUTAGE_DOWN SIZE SESSIONS RQ_PORT SINK_PORT HOOK_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
((OUTAGE_LOAD <= 3600 && OUTAGE_DOWN < OUTAGE_LOAD)) || die "OUTAGE_DOWN must be below OUTAGE_LOAD (≤ 3600)"

NEED=()
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null || NEED+=(postfix)
command -v python3 >/dev/null || NEED+=(python3)
install_packages "${NEED[@]}"
PY=$(command -v python3)
# Installing postfix starts its daemon: this benchmark does not use it.
command -v postfix >/dev/null && postfix status >/dev/null 2>&1 && postfix stop >/dev/null 2>&1
for p in $RQ_PORT $SINK_PORT $HOOK_PORT; do port_busy "$p" && die "port $p is already in use"; done

WORK=$(mktemp -d /tmp/relayq-hbench.XXXX) || die "mktemp"
RQ_PID= SINK_PID= HOOK_PID= CUR_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 15
    [[ -n $SINK_PID ]] && stop_pid "$SINK_PID" smtp-sink 5
    [[ -n $HOOK_PID ]] && stop_pid "$HOOK_PID" webhook-sink 5
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

if [[ $BUILD == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "build failed"
fi

smtp-sink -u postfix -m 1024 "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" 10 || die "smtp-sink did not listen"
DOWN=$WORK/receiver-down
"$PY" "$HERE/webhook_sink.py" --port "$HOOK_PORT" --down-file "$DOWN" --report "$WORK/hook.json" >"$WORK/hook.log" 2>&1 &
HOOK_PID=$!
wait_port "$HOOK_PORT" 10 || die "webhook sink did not listen"
hook_report() { rm -f "$WORK/hook.json"; kill -USR1 "$HOOK_PID"; for _ in $(seq 50); do [[ -s $WORK/hook.json ]] && break; sleep 0.1; done; cat "$WORK/hook.json"; }
json() { "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

rq_start() { # name
    local dir=$WORK/$1
    mkdir -p "$dir"
    echo "bench-secret" >"$dir/secret"
    cat >"$dir/relayq.toml" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$dir/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = 2000
[retry]
initial = "2s"
max = "2s"
[[route]]
domains = ["*"]
host = "127.0.0.1"
port = $SINK_PORT
tls = "none"
[[webhook]]
name = "bench"
url = "http://127.0.0.1:$HOOK_PORT/events"
secret_file = "$dir/secret"
events = ["delivered", "bounced", "deferred"]
batch_max = $BATCH_MAX
EOF
    "$RELAYQ_BIN" serve --config "$dir/relayq.toml" >"$dir/relayq.log" 2>&1 &
    RQ_PID=$!
    wait_port "$RQ_PORT" 60 || die "relayq did not listen: $(tail -3 "$dir/relayq.log")"
    RQ_CONFIG=$dir/relayq.toml
}
rq_stop() { stop_pid "$RQ_PID" relayq 30; wait "$RQ_PID" 2>/dev/null; RQ_PID=; }
rss_mb() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }
# backlog: the webhook's backlog, from `relayq webhook status --json`.
backlog() { "$RELAYQ_BIN" webhook status --json --config "$RQ_CONFIG" | json '[0]["backlog"]'; }

out=$WORK/results.txt
{
    echo "date: $(date -Iseconds); host: $(uname -srm); $(nproc) CPUs"
    echo "settings: DRAIN_EVENTS=$DRAIN_EVENTS BATCH_MAX=$BATCH_MAX OUTAGE_RATE=$OUTAGE_RATE OUTAGE_LOAD=$OUTAGE_LOAD OUTAGE_DOWN=$OUTAGE_DOWN SIZE=$SIZE"
} >"$out"

if [[ " $CASES " == *" drain "* ]]; then
    log "drain: $DRAIN_EVENTS messages delivered with the receiver refusing"
    touch "$DOWN"
    rq_start drain
    per=$((DRAIN_EVENTS / SESSIONS))
    seq 1 "$SESSIONS" | run_bg timeout 1800 xargs -P "$SESSIONS" -I{} \
        smtp-source -d -s 1 -m "$per" -l "$SIZE" -f bench@example.com -t "r{}@dest.test" "127.0.0.1:$RQ_PORT" \
        >"$WORK/fill.out" 2>&1
    total=$((per * SESSIONS))
    for _ in $(seq 1800); do
        b=$(backlog); [[ $b -ge $total ]] && break; sleep 1
    done
    log "drain: backlog $b events; receiver up"
    before=$(hook_report | json '["distinct"]')
    t0=$(date +%s.%N)
    rm -f "$DOWN"
    for _ in $(seq 36000); do
        b=$(backlog); [[ $b == 0 ]] && break; sleep 0.1
    done
    t1=$(date +%s.%N)
    report=$(hook_report)
    got=$(($(echo "$report" | json '["distinct"]') - before))
    secs=$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.2f", a-b}')
    rate=$(awk -v n="$got" -v s="$secs" 'BEGIN{printf "%.0f", n/s}')
    # From the receiver's first taken post to its last: the sender's rate,
    # without what was left of its back-off when the receiver came up.
    span=$(echo "$report" | json '["seconds_first_to_last"]')
    taken_rate=$(awk -v n="$got" -v s="$span" 'BEGIN{printf "%.0f", (s > 0 ? n / s : 0)}')
    echo "drain: $got events taken in ${secs}s from the receiver's return = $rate events/s (back-off included); first to last taken post ${span}s = $taken_rate events/s (batch_max $BATCH_MAX); receiver summary: $report" >>"$out"
    rq_stop
fi

if [[ " $CASES " == *" outage "* ]]; then
    log "outage: $OUTAGE_RATE msg/s for ${OUTAGE_LOAD}s, receiver down for the first ${OUTAGE_DOWN}s"
    start_report=$(hook_report)
    start_distinct=$(echo "$start_report" | json '["distinct"]')
    touch "$DOWN"
    rq_start outage
    # latency.py offers at most 600 s at a time: segments of 300 s.
    (
        left=$OUTAGE_LOAD
        while ((left > 0)); do
            segment=$((left < 300 ? left : 300))
            "$PY" "$HERE/latency.py" --port "$RQ_PORT" --rate "$OUTAGE_RATE" --duration "$segment" --mode pool \
                --pool "$SESSIONS" --size "$SIZE" --json >>"$WORK/load.json" 2>>"$WORK/load.err"
            left=$((left - segment))
        done
    ) &
    LOAD_PID=$!
    t0=$(date +%s)
    rss_samples=()
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        now=$(($(date +%s) - t0))
        if ((now >= OUTAGE_DOWN)) && [[ -e $DOWN ]]; then
            log "outage: receiver up after ${now}s (backlog $(backlog))"
            rm -f "$DOWN"
        fi
        rss_samples+=("$(rss_mb "$RQ_PID")")
        sleep 10
    done
    wait "$LOAD_PID"
    rm -f "$DOWN"
    for _ in $(seq 1800); do b=$(backlog); [[ $b == 0 ]] && break; sleep 1; done
    sleep 2
    sent=$(grep -ac 'status=sent' "$WORK/outage/relayq.log")
    report=$(hook_report)
    distinct=$(($(echo "$report" | json '["distinct"]') - start_distinct))
    echo "outage: delivered $sent, events taken $distinct (distinct), final backlog $b; receiver summary: $report" >>"$out"
    echo "outage: daemon RSS MB every 10 s: ${rss_samples[*]}" >>"$out"
    rq_stop
fi

cat "$out"
mkdir -p "$RESULTS_DIR"
cp "$out" "$RESULTS_DIR/webhooks-$(date +%Y%m%d-%H%M%S).txt"
