#!/usr/bin/env bash
# Syscalls, context switches and CPU per message of relayq's own process,
# intake and delivery separately, then end to end. Counts, not times: they
# hold on a busy machine too. Prints numbers; it is not a test.
#
# Phases (each on a fresh spool, relayq alone is traced, never the clients):
#   intake    N messages from SESSIONS smtp-source sessions, delivery gated
#             (the route's host accepts connections and never greets, so no
#             delivery progresses): what accepting costs.
#   delivery  the same N queued messages drained into smtp-sink after a
#             restart (no intake): what delivering costs.
#   e2e       N messages accepted and delivered at once (route to the sink).
# For each: `strace -f -c` (syscalls by kind, per message) and, in a second
# identical run, `perf stat -e context-switches,cpu-migrations` plus the
# process's CPU ticks (strace slows the process, so CPU is measured apart).
#
# Knobs: N=20000 SESSIONS=20 SIZE=2048 PHASES="intake delivery e2e"
#        RQ_PORT=2631 SINK_PORT=2632 GATE_PORT=2633 BUILD=1 KEEP=0
#        RELAYQ_BIN=target/release/relayq
# Network: only 127.0.0.1. Needs root (smtp-sink -u), strace, perf.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"

N=${N:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
PHASES=${PHASES:-"intake delivery e2e"}
RQ_PORT=${RQ_PORT:-2631}
SINK_PORT=${SINK_PORT:-2632}
GATE_PORT=${GATE_PORT:-2633}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
RELAYQ_BIN=${RELAYQ_BIN:-$ROOT/target/release/relayq}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
for v in N SESSIONS SIZE RQ_PORT SINK_PORT GATE_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
((N % SESSIONS == 0)) || die "N must be a multiple of SESSIONS"
[[ $EUID == 0 ]] || die "run as root (smtp-sink -u postfix)"

NEED=()
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null || NEED+=(postfix)
command -v strace >/dev/null || NEED+=(strace)
command -v perf >/dev/null || NEED+=(linux-perf)
command -v python3 >/dev/null || NEED+=(python3)
install_packages "${NEED[@]}"
PY=$(command -v python3)
for p in $RQ_PORT $SINK_PORT $GATE_PORT; do port_busy "$p" && die "port $p is already in use"; done

WORK=$(mktemp -d /tmp/relayq-sys.XXXX) || die "mktemp"
HZ=$(getconf CLK_TCK)
RQ_PID= SINK_PID= GATE_PID= CUR_PID= TRACE_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $TRACE_PID ]] && kill -INT "$TRACE_PID" 2>/dev/null
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 15
    [[ -n $SINK_PID ]] && stop_pid "$SINK_PID" smtp-sink 5
    [[ -n $GATE_PID ]] && stop_pid "$GATE_PID" gate 5
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
# The gate: accepts connections and never greets.
"$PY" -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $GATE_PORT)); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
" &
GATE_PID=$!
wait_port "$SINK_PORT" 10 && wait_port "$GATE_PORT" 10 || die "sink or gate did not listen"

# config DIR PORT: relayq on DIR, every domain routed to 127.0.0.1:PORT.
config() {
    mkdir -p "$1"
    cat >"$1/relayq.toml" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$1/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = 2000
[delivery]
greeting_timeout = "30m"
[retry]
initial = "2s"
max = "2s"
[[route]]
domains = ["*"]
host = "127.0.0.1"
port = $2
tls = "none"
EOF
}
start() { # DIR
    "$RELAYQ_BIN" serve --config "$1/relayq.toml" >>"$1/relayq.log" 2>&1 &
    RQ_PID=$!
    wait_port "$RQ_PORT" 60 || die "relayq did not listen: $(tail -3 "$1/relayq.log")"
}
stop() { stop_pid "$RQ_PID" relayq 30; wait "$RQ_PID" 2>/dev/null; RQ_PID=; }
fill() {
    local per=$((N / SESSIONS))
    seq 1 "$SESSIONS" | run_bg timeout 900 xargs -P "$SESSIONS" -I{} \
        smtp-source -d -s 1 -m "$per" -l "$SIZE" -f bench@example.com -t "r{}@dest.test" "127.0.0.1:$RQ_PORT" \
        >"$WORK/fill.out" 2>&1 || die "smtp-source failed: $(tail -3 "$WORK/fill.out")"
}
delivered() { grep -ac 'status=sent' "$1/relayq.log"; }
wait_delivered() { # DIR COUNT
    local i
    for ((i = 0; i < 9000; i++)); do (($(delivered "$1") >= $2)) && return 0; sleep 0.1; done
    die "only $(delivered "$1") of $2 delivered"
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# measure LABEL MODE DIR ACTION...: runs ACTION with relayq (pid RQ_PID)
# traced by MODE (strace | perf), and writes $WORK/LABEL-MODE.txt.
measure() {
    local label=$1 mode=$2 dir=$3; shift 3
    local out=$WORK/$label-$mode.txt c0 c1
    case $mode in
        strace) strace -f -c -o "$out" -p "$RQ_PID" 2>/dev/null & TRACE_PID=$! ;;
        perf) perf stat -e context-switches,cpu-migrations -x, -o "$out" -p "$RQ_PID" 2>/dev/null & TRACE_PID=$! ;;
    esac
    sleep 1
    c0=$(ticks "$RQ_PID")
    "$@"
    c1=$(ticks "$RQ_PID")
    kill -INT "$TRACE_PID" 2>/dev/null; wait "$TRACE_PID" 2>/dev/null; TRACE_PID=
    echo "$((c1 - c0))" >"$WORK/$label-$mode.ticks"
}

report() { # LABEL
    local label=$1 calls cs cpu
    calls=$(awk '$NF=="total"{print $4}' "$WORK/$label-strace.txt")
    cs=$(awk -F, '/context-switches/{print $1}' "$WORK/$label-perf.txt")
    cpu=$(cat "$WORK/$label-perf.ticks")
    printf '%-9s syscalls/msg %6.2f  context switches/msg %5.2f  CPU ms/msg %.3f (untraced run)\n' \
        "$label" "$(awk -v a="$calls" -v n="$N" 'BEGIN{print a/n}')" \
        "$(awk -v a="$cs" -v n="$N" 'BEGIN{print a/n}')" \
        "$(awk -v t="$cpu" -v hz="$HZ" -v n="$N" 'BEGIN{print 1000*t/hz/n}')" >>"$WORK/summary.txt"
    {
        echo "== $label: syscalls by kind, per message (strace -f -c)"
        # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall.
        awk -v n="$N" '$1 ~ /^[0-9.]+$/ && $NF != "total" && $4 ~ /^[0-9]+$/ {
            printf "   %-20s %8.3f\n", $NF, $4/n }' "$WORK/$label-strace.txt" | sort -k2 -nr | head -15
    } >>"$WORK/detail.txt"
}

: >"$WORK/summary.txt"; : >"$WORK/detail.txt"
for mode in strace perf; do
    if [[ " $PHASES " == *" intake "* || " $PHASES " == *" delivery "* ]]; then
        dir=$WORK/gated-$mode
        config "$dir" "$GATE_PORT"
        start "$dir"
        log "intake ($mode): $N messages, delivery gated"
        if [[ " $PHASES " == *" intake "* ]]; then measure intake "$mode" "$dir" fill; else fill; fi
        stop
        if [[ " $PHASES " == *" delivery "* ]]; then
            config "$dir" "$SINK_PORT"
            : >"$dir/relayq.log"
            start "$dir"
            log "delivery ($mode): draining $N messages"
            measure delivery "$mode" "$dir" wait_delivered "$dir" "$N"
            stop
        fi
    fi
    if [[ " $PHASES " == *" e2e "* ]]; then
        dir=$WORK/e2e-$mode
        config "$dir" "$SINK_PORT"
        start "$dir"
        log "e2e ($mode): $N messages accepted and delivered"
        measure e2e "$mode" "$dir" eval 'fill; wait_delivered "$dir" "$N"'
        stop
    fi
done
for phase in $PHASES; do report "$phase"; done

{
    echo "date: $(date -Iseconds); host: $(uname -srm); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "settings: N=$N SESSIONS=$SESSIONS SIZE=$SIZE; relayq $(git -C "$ROOT" rev-parse --short HEAD)"
    cat "$WORK/summary.txt"
    echo
    cat "$WORK/detail.txt"
} | tee "$WORK/result.txt"
mkdir -p "$RESULTS_DIR"
cp "$WORK/result.txt" "$RESULTS_DIR/syscalls-$(date +%Y%m%d-%H%M%S).txt"
