#!/usr/bin/env bash
# relayq suppression list benchmark: import N addresses (default a million)
# into a running daemon and print what it costs: import time, the daemon's
# memory before and after (and after a restart), the restart time with and
# without the entries (and the load itself, from the daemon's log line),
# `suppression list` (first line, the whole list and the memory it takes),
# and the RCPT check's cost from the set's micro-benchmark.
#
# Prints numbers; it is not a test and asserts nothing. See
# docs/suppression.md ("Scale") and tests/bench/README.md.
#
# Knobs (environment):
#   N=1000000          addresses to import (QUICK=1: 20000)
#   RQ_PORT=2633       the relay's listener (127.0.0.1)
#   START_TIMEOUT=120 OP_TIMEOUT=1800  bounds (seconds)
#   BUILD=1            cargo build --release --bin relayq (BUILD=0: use RELAYQ_BIN)
#   MICRO=1            also run the set's micro-benchmark (cargo test --release)
#   KEEP=0  RESULTS_DIR=tests/bench/results
#
# Network: only 127.0.0.1, nothing is delivered (no mail is sent). Every
# wait is bounded; the daemon is stopped on exit and the temp directory
# removed unless KEEP=1.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then N=${N:-20000}; fi
N=${N:-1000000}
RQ_PORT=${RQ_PORT:-2633}
START_TIMEOUT=${START_TIMEOUT:-120}
OP_TIMEOUT=${OP_TIMEOUT:-1800}
BUILD=${BUILD:-1}
MICRO=${MICRO:-1}
RELAYQ_BIN=${RELAYQ_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/relayq}
KEEP=${KEEP:-0}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}

# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a-b}'; }

for v in N RQ_PORT START_TIMEOUT OP_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((N >= 1 && N <= 20000000)) || die "N must be 1..20000000"
port_busy "$RQ_PORT" && die "port $RQ_PORT is already in use"

WORK=$(mktemp -d /tmp/relayq-suppression.XXXX) || die "mktemp"
RQ_PID= CUR_PID= SAMPLER_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $SAMPLER_PID ]] && stop_pid "$SAMPLER_PID" sampler 5
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 30
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $BUILD == 1 ]]; then
    log "building relayq (release)"
    (cd "$ROOT" && timeout 3600 cargo build --release --bin relayq -q) || die "cargo build failed"
fi
[[ -x $RELAYQ_BIN ]] || die "no relayq binary at $RELAYQ_BIN"

CONFIG=$WORK/relayq.toml
cat >"$CONFIG" <<EOF
hostname = "bench.test"
[spool]
path = "$WORK/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[dns]
nameservers = ["127.0.0.1:9"]
EOF
rq() { timeout "$OP_TIMEOUT" "$RELAYQ_BIN" "$@" --config "$CONFIG"; }
rss_mb() { awk '/^VmRSS:/{printf "%.1f", $2/1024}' "/proc/$RQ_PID/status" 2>/dev/null; }
hwm_mb() { awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$RQ_PID/status" 2>/dev/null; }

# start: launches the daemon, waits for "relayq ready"; sets RQ_PID and
# STARTED (seconds from exec to ready).
start() {
    local log=$WORK/relayq-$1.log t0 i
    t0=$(now)
    RUST_LOG=info "$RELAYQ_BIN" serve --config "$CONFIG" 2>"$log" &
    RQ_PID=$!
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        grep -q "relayq ready" "$log" 2>/dev/null && break
        kill -0 "$RQ_PID" 2>/dev/null || die "relayq exited at start: $(tail -3 "$log")"
        sleep 0.05
    done
    grep -q "relayq ready" "$log" || die "relayq not ready after ${START_TIMEOUT}s"
    STARTED=$(fsub "$(now)" "$t0")
    LOADED=$(grep -o 'suppression list: .*' "$log" | head -1)
}
stop() { stop_pid "$RQ_PID" relayq 60; RQ_PID=; }

log "writing $N addresses"
awk -v n="$N" 'BEGIN{
    print "address,class,reason";
    for (i = 0; i < n; i++) {
        if (i % 3 == 0) printf "user.%d@domain%d.example\n", i, i % 1000;
        else printf "user.%d@domain%d.example,invalid_recipient,550 5.1.1 <user.%d@domain%d.example>: Recipient address rejected: User unknown\n", i, i % 1000, i, i % 1000;
    }}' >"$WORK/list.csv"

start empty
R_START_EMPTY=$STARTED
sleep 1
R_RSS_EMPTY=$(rss_mb)

log "importing"
t0=$(now)
rq suppression import "$WORK/list.csv" >"$WORK/import.out" 2>&1 || die "import failed: $(tail -3 "$WORK/import.out")"
R_IMPORT=$(fsub "$(now)" "$t0")
sleep 1
R_RSS_IMPORTED=$(rss_mb)
R_HWM_IMPORTED=$(hwm_mb)

log "listing"
t0=$(now)
rq suppression list --limit 1 >/dev/null || die "list --limit 1 failed"
R_LIST_FIRST=$(fsub "$(now)" "$t0")
# The daemon's resident memory, sampled while the whole list streams.
(peak=0; while kill -0 "$RQ_PID" 2>/dev/null; do
    r=$(awk '/^VmRSS:/{print $2}' "/proc/$RQ_PID/status" 2>/dev/null || echo 0)
    ((r > peak)) && peak=$r && echo "$peak" >"$WORK/list-peak"
    sleep 0.05
done) &
SAMPLER_PID=$!
t0=$(now)
R_LIST_COUNT=$(rq suppression list --json | grep -c '"address"')
R_LIST_ALL=$(fsub "$(now)" "$t0")
stop_pid "$SAMPLER_PID" sampler 5; SAMPLER_PID=
R_LIST_PEAK=$(awk '{printf "%.1f", $1/1024}' "$WORK/list-peak" 2>/dev/null)

log "restarting with the list"
stop
start full
R_START_FULL=$STARTED
R_LOADED_FULL=$LOADED
sleep 1
R_RSS_RESTARTED=$(rss_mb)
# One RCPT against the loaded list, end to end.
R_RCPT=$(python3 - "$RQ_PORT" <<'PY'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("bench")
s.mail("app@bench.test")
print(s.rcpt("User.3@Domain3.example")[0])
s.quit()
PY
)
stop

R_MICRO="(skipped: MICRO=0)"
if [[ $MICRO == 1 ]]; then
    log "set micro-benchmark (cargo test --release)"
    R_MICRO=$(cd "$ROOT" && SUPPRESSION_N=$N timeout 3600 cargo test --release -q -p relayq --lib \
        suppression::set::tests::check_cost -- --ignored --nocapture 2>&1 | grep -E '^(set of|RCPT)')
fi

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/suppression-$(date +%Y-%m-%d-%H%M%S)$([[ $QUICK == 1 ]] && echo -quick).txt
{
    echo "relayq suppression list, N=$N addresses ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null), $(nproc) cores)"
    echo
    echo "import (CLI, chunks of 5000 per commit):  ${R_IMPORT} s  ($(awk -v n="$N" -v s="$R_IMPORT" 'BEGIN{printf "%.0f", n/s}') addresses/s)"
    echo "daemon RSS: empty list ${R_RSS_EMPTY} MB, after the import ${R_RSS_IMPORTED} MB (peak ${R_HWM_IMPORTED} MB), after a restart ${R_RSS_RESTARTED} MB"
    echo "  cost of the list: $(awk -v a="$R_RSS_IMPORTED" -v b="$R_RSS_EMPTY" 'BEGIN{printf "%.1f", a-b}') MB after the import, $(awk -v a="$R_RSS_RESTARTED" -v b="$R_RSS_EMPTY" 'BEGIN{printf "%.1f", a-b}') MB after a restart"
    echo "restart to 'relayq ready': ${R_START_EMPTY} s without entries, ${R_START_FULL} s with them  [${R_LOADED_FULL}]"
    echo "suppression list --limit 1: ${R_LIST_FIRST} s; the whole list (--json, ${R_LIST_COUNT} entries): ${R_LIST_ALL} s, daemon RSS peak ${R_LIST_PEAK} MB while streaming"
    echo "RCPT of a suppressed address after the restart: ${R_RCPT}"
    echo
    echo "$R_MICRO"
} | tee "$OUT"
log "results in $OUT"
