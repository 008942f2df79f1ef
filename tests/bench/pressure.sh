#!/usr/bin/env bash
# relayq connection-pressure benchmark: relayq vs Postfix (own instance).
#
# Each server gets MAX_CONN sessions that do nothing useful (half idle after
# the greeting, half trickling a DATA transfer one octet a second), then
# WAITING more clients that connect and say nothing, with closed ones coming
# back (RECONNECT_DELAY). Then PROBES real clients, one every GAP seconds,
# each sending one message: the script prints how long each waited for its
# greeting and for the reply to its final dot. Both servers are configured for
# MAX_CONN sessions (relayq smtp.max_connections; Postfix
# default_process_limit) and keep their other defaults (Postfix's stress mode
# included). Prints numbers; it is not a test and asserts nothing.
#
# Knobs (environment):
#   MAX_CONN=100 WAITING=50 PROBES=5 GAP=2 PROBE_TIMEOUT=60 WARMUP=3
#   RECONNECT_DELAY=0.2   seconds before a closed attacker reconnects (-1: never)
#   SYSTEMS="relayq postfix"
#   RQ_PORT=2631 PF_PORT=2632 DEAD_PORT=2633 METRICS_PORT=2634
#   BUILD=1  RELAYQ_BIN=target/release/relayq  KEEP=0
#
# Network: only 127.0.0.1. Mail the probes send is never delivered: relayq's
# resolver and Postfix's relayhost point at DEAD_PORT, where nothing listens.
# Every wait is bounded; everything started here is stopped on exit (trap).

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

MAX_CONN=${MAX_CONN:-100}
WAITING=${WAITING:-50}
PROBES=${PROBES:-5}
GAP=${GAP:-2}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-60}
WARMUP=${WARMUP:-3}
RECONNECT_DELAY=${RECONNECT_DELAY:-0.2}
SYSTEMS=${SYSTEMS:-"relayq postfix"}
RQ_PORT=${RQ_PORT:-2631}
PF_PORT=${PF_PORT:-2632}
DEAD_PORT=${DEAD_PORT:-2633}
METRICS_PORT=${METRICS_PORT:-2634}
BUILD=${BUILD:-1}
RELAYQ_BIN=${RELAYQ_BIN:-$ROOT/target/release/relayq}
KEEP=${KEEP:-0}
IDLE_WAIT=0 IDLE_PCT=100 # common.sh's quiet_wait is not used here

# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"
sys_on() { [[ " $SYSTEMS " == *" $1 "* ]]; }

for v in MAX_CONN WAITING PROBES GAP PROBE_TIMEOUT WARMUP RQ_PORT PF_PORT DEAD_PORT METRICS_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((MAX_CONN >= 2 && MAX_CONN <= 1000)) || die "MAX_CONN must be 2..1000"
((WAITING <= 1000 && PROBES >= 1 && PROBES <= 100 && PROBE_TIMEOUT <= 600)) || die "knob out of range"
[[ $RECONNECT_DELAY =~ ^-?[0-9]+(\.[0-9]+)?$ ]] || die "RECONNECT_DELAY must be a number"
if sys_on postfix; then [[ $EUID == 0 ]] || die "run as root (Postfix instance), or SYSTEMS=relayq"; fi
# Attackers, waiting clients and probes each need a descriptor here.
ulimit -n $((4 * (MAX_CONN + WAITING) + 256)) 2>/dev/null || log "could not raise the open-file limit"

# ---------------------------------------------------------------- dependencies
NEED_PKGS=()
if sys_on postfix; then command -v postfix >/dev/null || NEED_PKGS+=(postfix); fi
command -v python3 >/dev/null || NEED_PKGS+=(python3)
install_packages "${NEED_PKGS[@]}"
PY=$(command -v python3)
if sys_on postfix; then id postfix >/dev/null 2>&1 || die "user 'postfix' missing"; fi

for p in $RQ_PORT $PF_PORT $DEAD_PORT $METRICS_PORT; do port_busy "$p" && die "port $p is already in use"; done

# ------------------------------------------------------------------ workspace
WORK=$(mktemp -d /tmp/relayq-pbench.XXXX) || die "mktemp"
chmod 755 "$WORK"
RQ_PID= PF_DIR= PF_MASTER= CUR_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 15
    pf_stop
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

drive() { # port label
    log "$2: $MAX_CONN idle/trickling sessions, $WAITING waiting, $PROBES real clients"
    run_bg timeout $((WARMUP + PROBES * (GAP + PROBE_TIMEOUT) + 120)) "$PY" "$HERE/pressure.py" \
        --port "$1" --max-conn "$MAX_CONN" --waiting "$WAITING" --probes "$PROBES" --gap "$GAP" \
        --probe-timeout "$PROBE_TIMEOUT" --warmup "$WARMUP" --reconnect-delay "$RECONNECT_DELAY" \
        >"$WORK/$2.out" 2>"$WORK/$2.err" || log "$2: driver exit $? ($(tail -2 "$WORK/$2.err" | tr '\n' '|'))"
    sed "s/^/$2 /" "$WORK/$2.out"
}

# ---------------------------------------------------------------- relayq
if sys_on relayq; then
    if [[ $BUILD == 1 ]]; then
        log "cargo build --release"
        (cd "$ROOT" && timeout 1800 cargo build --release -q 2>"$WORK/build.log") || die "cargo build failed: $(tail -5 "$WORK/build.log")"
    fi
    [[ -x $RELAYQ_BIN ]] || die "no relayq binary at $RELAYQ_BIN"
    mkdir -p "$WORK/relayq"
    cat >"$WORK/relayq/relayq.toml" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$WORK/relayq/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = $MAX_CONN
[dns]
# Nothing listens here: mail stays queued, the benchmark measures intake only.
nameservers = ["127.0.0.1:$DEAD_PORT"]
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
[log]
level = "warn"
EOF
    "$RELAYQ_BIN" serve --config "$WORK/relayq/relayq.toml" >"$WORK/relayq.log" 2>&1 &
    RQ_PID=$!
    wait_port "$RQ_PORT" 60 || die "relayq did not listen: $(tail -3 "$WORK/relayq.log")"
    drive "$RQ_PORT" relayq
    "$PY" - "$METRICS_PORT" <<'EOF' | sed 's/^/relayq metric /'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(("relayq_smtp_sessions_shed_total", "relayq_smtp_stress", "relayq_messages_accepted_total")):
        print(line)
EOF
    stop_pid "$RQ_PID" relayq 30
    RQ_PID=
    grep -aE 'connection (limit|pressure)' "$WORK/relayq.log" | head -3 | sed 's/^/relayq log: /'
fi

# ---------------------------------------------------------------- Postfix
if sys_on postfix; then
    pf_start pressure "$DEAD_PORT"
    # As many smtpd processes as relayq has sessions.
    postconf -c "$PF_DIR/etc" -e "default_process_limit = $MAX_CONN" && postfix -c "$PF_DIR/etc" reload >/dev/null 2>&1
    sleep 1
    drive "$PF_PORT" postfix
    grep -aE 'process limit|stress|too many|timeout after' "$PF_DIR/maillog" \
        | sed -E 's/^.*postfix\/([a-z]+)\[[0-9]+\]: /\1: /; s/from [^ ]*\[127\.0\.0\.1\]/from 127.0.0.1/' \
        | sort | uniq -c | sort -rn | head -5 | sed 's/^/postfix log: /'
    pf_stop
fi
