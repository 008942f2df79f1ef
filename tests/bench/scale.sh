#!/usr/bin/env bash
# relayq scale benchmark: a million deferred messages in the queue, and what
# the operator's commands (list, stats, bulk delete) and restarts cost then;
# Postfix with 100,000 deferred messages in the same run as the anchor.
#
# Prints numbers; it is not a test and asserts nothing. See tests/bench/README.md
# ("Scale benchmark") and the README's "A million queued messages".
#
# Knobs (environment):
#   N=1000000            deferred messages to fill (QUICK=1: 20000)
#   TERM_N=200000        messages refilled for the SIGTERM-during-bulk case (QUICK=1: 5000)
#   PF_N=100000          messages for Postfix (QUICK=1: 5000); 0 skips Postfix
#   DOMAINS=250          recipient domains d1.test .. dN.test (N, TERM_N, PF_N multiples of it)
#   SIZE=2048            payload bytes (smtp-source -l; headers extra)
#   SESSIONS=32          concurrent smtp-source sessions (one per domain at a time, -d)
#   REPEAT=2             runs of the short read phases (list first line, list --json, stats)
#   TERM_AFTER=2         seconds into the second bulk delete when SIGTERM is sent
#   PROBE_MS=50          interval of the intake probe during the bulk delete
#   FILL_TIMEOUT=1800 OP_TIMEOUT=900 START_TIMEOUT=120  bounds (seconds)
#   FIRST_RETRY_MS=5     interval of the first-250 client's attempts during a restart
#   IDLE_WAIT=10 IDLE_PCT=40  wait (bounded) for a quieter machine before a phase
#   RQ_PORT=2623 PF_PORT=2622 DEAD_PORT=2629 (nothing listens there: delivery defers)
#   BUILD=1 (cargo build --release --bin relayq; its binary)  RELAYQ_BIN (with BUILD=0)
#   KEEP=0  RESULTS_DIR=tests/bench/results
#
# How mail defers: a [[route]] sends every domain to 127.0.0.1:DEAD_PORT,
# where nothing listens, and retry.initial is a day. Each message is tried
# once, the connection is refused at once, and it waits a day: the queue is
# a "plug" of deferred mail, and no sink process competes with the daemon
# and the loader for the two cores (a sink answering 451 would cost an SMTP
# transaction per message on the same CPUs and measure the sink as well).
# Postfix gets the same: relayhost [127.0.0.1]:DEAD_PORT, backoff of a day.
#
# Network: only 127.0.0.1. Every wait is bounded; everything started here is
# stopped on exit (trap), and the spool and the Postfix queue (under a
# mktemp directory in /tmp) are deleted unless KEEP=1.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then N=${N:-20000}; TERM_N=${TERM_N:-5000}; PF_N=${PF_N:-5000}; fi
N=${N:-1000000}
TERM_N=${TERM_N:-200000}
PF_N=${PF_N:-100000}
DOMAINS=${DOMAINS:-250}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-32}
REPEAT=${REPEAT:-2}
TERM_AFTER=${TERM_AFTER:-2}
PROBE_MS=${PROBE_MS:-50}
FIRST_RETRY_MS=${FIRST_RETRY_MS:-5}
FILL_TIMEOUT=${FILL_TIMEOUT:-1800}
OP_TIMEOUT=${OP_TIMEOUT:-900}
START_TIMEOUT=${START_TIMEOUT:-120}
IDLE_WAIT=${IDLE_WAIT:-10}
IDLE_PCT=${IDLE_PCT:-40}
RQ_PORT=${RQ_PORT:-2623}
PF_PORT=${PF_PORT:-2622}
DEAD_PORT=${DEAD_PORT:-2629}
BUILD=${BUILD:-1}
RELAYQ_BIN_SET=${RELAYQ_BIN:-}
RELAYQ_BIN=${RELAYQ_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/relayq}
KEEP=${KEEP:-0}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}

SENDER=bench@example.com

# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN{ if (s+0 > 0) printf "%.0f", n/s; else printf "NA" }'; }

for v in N TERM_N PF_N DOMAINS SIZE SESSIONS REPEAT TERM_AFTER PROBE_MS FIRST_RETRY_MS FILL_TIMEOUT OP_TIMEOUT START_TIMEOUT \
    IDLE_WAIT IDLE_PCT RQ_PORT PF_PORT DEAD_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((DOMAINS >= 1 && DOMAINS <= 1000)) || die "DOMAINS must be 1..1000"
((N >= DOMAINS && N % DOMAINS == 0 && TERM_N % DOMAINS == 0 && PF_N % DOMAINS == 0)) \
    || die "N, TERM_N and PF_N must be multiples of DOMAINS ($DOMAINS)"
((SESSIONS >= 1 && SESSIONS <= 200)) || die "SESSIONS must be 1..200"
((REPEAT >= 1 && REPEAT <= 10)) || die "REPEAT must be 1..10"
((FILL_TIMEOUT <= 7200 && OP_TIMEOUT <= 3600 && START_TIMEOUT <= 600)) || die "timeouts too large"
((PF_N == 0)) || [[ $EUID == 0 ]] || die "run as root for the Postfix instance (or PF_N=0)"

# ---------------------------------------------------------------- dependencies
NEED_PKGS=()
command -v smtp-source >/dev/null && command -v postfix >/dev/null || NEED_PKGS+=(postfix)
command -v python3 >/dev/null || NEED_PKGS+=(python3)
install_packages "${NEED_PKGS[@]}"
PY=$(command -v python3)

for p in $RQ_PORT $PF_PORT $DEAD_PORT; do port_busy "$p" && die "port $p is already in use"; done

# ------------------------------------------------------------------ workspace
WORK=$(mktemp -d /tmp/relayq-scale.XXXX) || die "mktemp"
chmod 755 "$WORK"
# The spool of N messages: the payload plus headers and redb's overhead;
# refuse to start when the disk cannot hold it with room to spare.
need_kb=$((N * 6 + 2 * 1024 * 1024))
free_kb=$(df -Pk "$WORK" | awk 'NR==2{print $4}')
((free_kb > need_kb)) || { rmdir "$WORK"; die "$((free_kb / 1024)) MB free in /tmp, want $((need_kb / 1024)) MB for N=$N"; }
PROBLEMS=$WORK/problems.txt
: >"$PROBLEMS"
PF_DIR= PF_MASTER= RQ_PID= CUR_PID= PROBE_PID= SAMPLER_PID=
problem() { echo "$*" >>"$PROBLEMS"; log "problem: $*"; }
declare -A R

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $PROBE_PID ]] && stop_pid "$PROBE_PID" probe 5
    [[ -n $SAMPLER_PID ]] && stop_pid "$SAMPLER_PID" sampler 5
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 30
    pf_stop
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# ------------------------------------------------------------------ helpers
# Samples VmRSS of PID every 50 ms until it gets SIGTERM (or MAX seconds);
# prints "rss_start_kb rss_max_kb rss_end_kb hwm_start_kb hwm_end_kb samples".
cat >"$WORK/sampler.py" <<'EOF'
import signal, sys, time
pid, limit = int(sys.argv[1]), float(sys.argv[2])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def read():
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"): rss = int(line.split()[1])
                elif line.startswith("VmHWM:"): hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm
rss0, hwm0 = read()
peak, n, end = rss0, 1, time.time() + limit
rss, hwm = rss0, hwm0
while not stop and time.time() < end:
    time.sleep(0.05)
    r, h = read()
    if r:
        rss, hwm = r, h
        peak = max(peak, r)
        n += 1
print(rss0, peak, rss, hwm0, hwm, n, flush=True)
EOF

# Runs a command, reads its stdout: prints "first_line_s lines total_s rc".
# With HEAD=k it stops reading after k lines and closes the pipe, like `| head -k`.
cat >"$WORK/firstline.py" <<'EOF'
import os, subprocess, sys, time
head = int(os.environ.get("HEAD", "0"))
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
first, lines, buf = None, 0, b""
while True:
    chunk = p.stdout.read(1 << 16)
    if not chunk:
        break
    if first is None:
        first = time.monotonic() - t0
    k = chunk.count(b"\n")
    lines += k
    if head and lines >= head:
        break
p.stdout.close()
try:
    rc = p.wait(timeout=float(os.environ.get("OP_TIMEOUT", "900")))
except subprocess.TimeoutExpired:
    p.kill(); rc = p.wait()
print(f"{first if first is not None else -1:.3f} {lines} {time.monotonic() - t0:.3f} {rc}")
EOF

# Intake probe: one SMTP session of its own, a message every PROBE_MS ms;
# records the latency of every reply (greeting excluded). On SIGTERM or after
# MAX seconds prints "messages replies p50_ms p99_ms max_ms txn_max_ms errors
# slowest_by_command" (the last: MAIL/RCPT/DATA/dot maxima, ms, joined by /).
cat >"$WORK/probe.py" <<'EOF'
import signal, socket, sys, time
port, every, limit = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
lat, txn_max, msgs, errors = [], 0.0, 0, 0
by_cmd = [0.0, 0.0, 0.0, 0.0]
body = b"Subject: probe\r\nFrom: probe@example.com\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26 + b".\r\n"
def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")
    reply(f)
    s.sendall(b"EHLO probe.test\r\n"); reply(f)
    return s, f
s, f = connect()
end = time.time() + limit
nxt = time.monotonic()
while not stop and time.time() < end:
    nxt += every
    t_txn = time.monotonic()
    try:
        for k, cmd in enumerate((b"MAIL FROM:<probe@example.com>\r\n", b"RCPT TO:<r@probe.test>\r\n", b"DATA\r\n", body)):
            t = time.monotonic()
            s.sendall(cmd)
            line = reply(f)
            lat.append(time.monotonic() - t)
            by_cmd[k] = max(by_cmd[k], lat[-1])
            if line[:1] not in (b"2", b"3"):
                errors += 1
                break
        else:
            msgs += 1
        txn_max = max(txn_max, time.monotonic() - t_txn)
    except (OSError, ConnectionError):
        errors += 1
        try:
            s, f = connect()
        except OSError:
            pass
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
try:
    s.sendall(b"QUIT\r\n")
except OSError:
    pass
lat.sort()
q = lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1
print(msgs, len(lat), f"{q(0.5):.1f}", f"{q(0.99):.1f}", f"{1000 * lat[-1] if lat else -1:.1f}", f"{1000 * txn_max:.1f}", errors, "/".join(f"{1000 * x:.0f}" for x in by_cmd), flush=True)
EOF

# First 250 after a start: from the epoch time T0 (the daemon's exec) on,
# connects to 127.0.0.1:PORT every RETRY_MS ms until a message gets `250`
# (or LIMIT seconds pass). Prints "seconds_after_t0 attempts" (-1 when none
# got 250). The message goes to r@first250.test (deferred like the rest).
cat >"$WORK/first250.py" <<'EOF'
import socket, sys, time
port, t0, every, limit = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) / 1000, float(sys.argv[4])
body = b"Subject: first 250\r\nFrom: probe@example.com\r\n\r\nfirst message after the start\r\n.\r\n"
def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line
attempts = 0
while time.time() < t0 + limit:
    attempts += 1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            f = s.makefile("rb")
            if not reply(f).startswith(b"220"):
                raise ConnectionError("greeting")
            line = b""
            for cmd in (b"EHLO probe.test\r\n", b"MAIL FROM:<probe@example.com>\r\n", b"RCPT TO:<r@first250.test>\r\n", b"DATA\r\n", body):
                s.sendall(cmd)
                line = reply(f)
                if line[:1] not in (b"2", b"3"):
                    raise ConnectionError(line)
            if line.startswith(b"250"):
                print(f"{time.time() - t0:.3f} {attempts}", flush=True)
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except (OSError, ConnectionError):
        pass
    time.sleep(every)
print(f"-1 {attempts}", flush=True)
EOF

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || echo NA; }  # utime+stime
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN{ printf "%.0f", k/1024 }'; }

# fill PORT TOTAL TAG: SESSIONS concurrent smtp-source processes, one per
# domain at a time (-s 1 -d: one session reusing its connection), TOTAL/DOMAINS
# messages to r@dK.test each. Sets FILL_SECS and FILL_RC.
fill() {
    local port=$1 per=$(($2 / DOMAINS)) tag=$3 t0 t1
    t0=$(now)
    seq 1 "$DOMAINS" | run_bg timeout -s TERM "$FILL_TIMEOUT" xargs -P "$SESSIONS" -I{} \
        smtp-source -d -s 1 -m "$per" -l "$SIZE" -f "$SENDER" -t "r@d{}.test" "127.0.0.1:$port" \
        >"$WORK/fill-$tag.out" 2>"$WORK/fill-$tag.err"
    FILL_RC=$?
    t1=$(now)
    FILL_SECS=$(fsub "$t1" "$t0")
    ((FILL_RC == 0)) || problem "fill $tag: smtp-source/xargs exit $FILL_RC after ${FILL_SECS}s: $(grep -v '^$' "$WORK/fill-$tag.err" | sort | uniq -c | sort -rn | head -3 | tr '\n' '|')"
}

# ------------------------------------------------------------------- relayq
RQ_DIR=$WORK/rq
RQ_CONF=$RQ_DIR/relayq.toml
rq_seq=0
RQ_LOG=
rq_config() {
    mkdir -p "$RQ_DIR"
    cat >"$RQ_CONF" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$RQ_DIR/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = 2000
[retry]
# Tried once (refused at once), then a day's wait: the queue stays a plug.
initial = "1d"
max = "1d"
[control]
socket = "$RQ_DIR/control.sock"
# Nothing listens on DEAD_PORT: every delivery attempt is refused and defers.
[[route]]
domains = ["*"]
host = "127.0.0.1"
port = $DEAD_PORT
EOF
}
rq() { "$RELAYQ_BIN" queue -c "$RQ_CONF" "$@"; }
# Total queued, from `queue stats --json`; empty when the daemon does not answer.
rq_total() { rq --json stats 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["total"])' 2>/dev/null; }
rq_deferred() {
    rq --json stats 2>/dev/null | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(sum(l["deferred"] for l in d["lanes"]), d["total"])' 2>/dev/null
}

# rq_start [first250]: starts relayq and times it. Sets RQ_READY_S (exec ->
# "relayq ready" in the log: listening), RQ_READY_CPU (the daemon's CPU
# seconds by then: with other work on the machine, wall time well above it
# means the daemon waited for a CPU or the disk), RQ_ANSWER_S (exec -> `queue
# stats` answers), RQ_REBUILT_S (exec -> "queue rebuilt in" in the log: the
# schedule holds every stored message; rq_start returns only then) and
# RQ_REBUILD_MS (the rebuild's time as logged). With first250, a client
# sends a message from the exec on, retrying every FIRST_RETRY_MS ms:
# RQ_FIRST250_S (exec -> its `250`); FIRST250_SENT counts those messages.
FIRST250_SENT=0
rq_start() {
    rq_seq=$((rq_seq + 1))
    RQ_LOG=$RQ_DIR/relayq-$rq_seq.log
    : >"$RQ_LOG"
    wait_port_free "$RQ_PORT" 15 || die "port $RQ_PORT still busy"
    local t0 i first_pid=
    RQ_READY_S=NA RQ_ANSWER_S=NA RQ_READY_CPU=NA RQ_REBUILT_S=NA RQ_REBUILD_MS=NA RQ_FIRST250_S=NA
    t0=$(now)
    "$RELAYQ_BIN" serve --config "$RQ_CONF" >"$RQ_LOG" 2>&1 &
    RQ_PID=$!
    if [[ ${1:-} == first250 ]]; then
        "$PY" "$WORK/first250.py" "$RQ_PORT" "$t0" "$FIRST_RETRY_MS" "$START_TIMEOUT" >"$WORK/first250-$rq_seq.out" 2>&1 &
        first_pid=$!
    fi
    for ((i = 0; i < START_TIMEOUT * 50; i++)); do
        grep -aq 'relayq ready' "$RQ_LOG" && { RQ_READY_S=$(fsub "$(now)" "$t0"); RQ_READY_CPU=$(cpu_s "$RQ_PID"); break; }
        kill -0 "$RQ_PID" 2>/dev/null || break
        sleep 0.02
    done
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        [[ -n $(rq_total) ]] && { RQ_ANSWER_S=$(fsub "$(now)" "$t0"); break; }
        kill -0 "$RQ_PID" 2>/dev/null || break
        sleep 0.05
    done
    for ((i = 0; i < START_TIMEOUT * 50; i++)); do
        grep -aq 'queue rebuilt in ' "$RQ_LOG" && { RQ_REBUILT_S=$(fsub "$(now)" "$t0"); break; }
        kill -0 "$RQ_PID" 2>/dev/null || break
        sleep 0.02
    done
    RQ_REBUILD_MS=$(grep -aoE 'queue rebuilt in [0-9]+ ms' "$RQ_LOG" | grep -oE '[0-9]+' | head -1)
    if [[ -n $first_pid ]]; then
        wait "$first_pid" 2>/dev/null
        read -r RQ_FIRST250_S _ <"$WORK/first250-$rq_seq.out"
        if [[ -z ${RQ_FIRST250_S:-} || $RQ_FIRST250_S == -1 ]]; then
            problem "no 250 within ${START_TIMEOUT}s of the start"
            RQ_FIRST250_S=NA
        else
            FIRST250_SENT=$((FIRST250_SENT + 1))
        fi
    fi
    [[ $RQ_ANSWER_S != NA ]] || { problem "relayq did not answer within ${START_TIMEOUT}s: $(tail -3 "$RQ_LOG" | tr '\n' '|')"; return 1; }
    [[ $RQ_REBUILT_S != NA ]] || { problem "relayq did not rebuild its queue within ${START_TIMEOUT}s: $(tail -3 "$RQ_LOG" | tr '\n' '|')"; return 1; }
}
# rq_stop LABEL: SIGTERM, bounded wait; sets RQ_EXIT_S.
rq_stop() {
    local label=$1 t0 st rc
    RQ_EXIT_S=NA
    [[ -n $RQ_PID ]] || return 0
    t0=$(now)
    stop_pid "$RQ_PID" relayq 60; st=$?
    wait "$RQ_PID" 2>/dev/null; rc=$?
    RQ_EXIT_S=$(fsub "$(now)" "$t0")
    ((st == 0)) || problem "relayq [$label]: did not exit within 60s of SIGTERM (killed)"
    ((st != 0 || rc == 0)) || problem "relayq [$label]: exit status $rc after SIGTERM"
    RQ_PID=
}
# ERROR/WARN/panic lines of the current log, but for the two lines of the
# repair that kill -9 causes on purpose.
bad_lines() { grep -aE ' (ERROR|WARN) |panicked' "$RQ_LOG" | grep -avE 'spool database (was not closed cleanly|repaired)'; }
rq_log_check() { # LABEL
    local bad
    bad=$(bad_lines | wc -l)
    R[${1}_errors]=$bad
    if ((bad > 0)); then
        problem "relayq [$1]: $bad ERROR/WARN/panic log lines; first ones:"
        bad_lines | head -3 | cut -c1-300 | sed 's/^/    /' >>"$PROBLEMS"
    fi
}
# Waits (bounded) until every queued message has had its attempt (deferred == total >= WANT).
wait_deferred() {
    local want=$1 i d t
    for ((i = 0; i < OP_TIMEOUT; i++)); do
        read -r d t < <(rq_deferred)
        [[ -n ${d:-} && $d -ge $want && $d == "$t" ]] && return 0
        sleep 1
    done
    problem "relayq: $want messages not all deferred after ${OP_TIMEOUT}s (deferred ${d:-?} of ${t:-?})"
    return 1
}
settle_rss() { sleep 2; rss_kb "$RQ_PID"; }

{
    echo "date: $(date -Iseconds)"
    echo "host: $(uname -srm); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')); $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "disk: $(df -hT "$WORK" | awk 'NR==2{print $1, $2}') (relayq spool and Postfix queue in $WORK)"
    echo "postfix: $(postconf -d mail_version 2>/dev/null | cut -d' ' -f3); $("$PY" --version 2>&1)"
    echo "settings: N=$N TERM_N=$TERM_N PF_N=$PF_N DOMAINS=$DOMAINS SIZE=$SIZE SESSIONS=$SESSIONS REPEAT=$REPEAT TERM_AFTER=$TERM_AFTER PROBE_MS=$PROBE_MS"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$WORK/meta.txt"

if [[ $BUILD == 1 ]]; then
    log "cargo build --release --bin relayq"
    (cd "$ROOT" && timeout 1800 cargo build --release --bin relayq --message-format=json-render-diagnostics \
        >"$WORK/build.json" 2>"$WORK/build.log") || die "cargo build failed: $(tail -5 "$WORK/build.log")"
    # The binary cargo built, wherever its target directory is.
    [[ -n ${RELAYQ_BIN_SET:-} ]] || RELAYQ_BIN=$("$PY" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "relayq":
        print(m["executable"])' <"$WORK/build.json" | tail -1)
fi
[[ -x $RELAYQ_BIN ]] || die "no relayq binary at $RELAYQ_BIN"
echo "relayq: $("$RELAYQ_BIN" --version 2>/dev/null | head -1) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+local changes'))" >>"$WORK/meta.txt"

# ============================================================ 1-2. the fill
rq_config
rq_start || die "relayq did not start"
sleep 1
R[rss_empty]=$(rss_kb "$RQ_PID")
quiet_wait
log "fill: $N x ${SIZE} B messages over $DOMAINS domains, $SESSIONS sessions"
fill "$RQ_PORT" "$N" rq
R[fill_s]=$FILL_SECS
R[fill_rate]=$(rate "$N" "$FILL_SECS")
log "  filled in ${FILL_SECS}s (${R[fill_rate]} msg/s); waiting until all are deferred"
wait_deferred "$N"
read -r R[queued] _ < <(rq_deferred)
R[rss_fill]=$(settle_rss)
R[rss_per_msg]=$(awk -v a="${R[rss_fill]}" -v b="${R[rss_empty]}" -v n="${R[queued]:-0}" 'BEGIN{ if (n > 0) printf "%.0f", 1024*(a-b)/n; else print "NA" }')
R[spool_mb]=$(du -sm "$RQ_DIR/spool" | cut -f1)
log "  ${R[queued]} queued; RSS ${R[rss_fill]} kB (empty ${R[rss_empty]} kB): ${R[rss_per_msg]} B/msg; spool ${R[spool_mb]} MB"

# ============================================================ 3. restarts
quiet_wait
log "restart: SIGTERM, start again"
rq_stop "after fill"
R[stop_s]=$RQ_EXIT_S
rq_log_check fill
rq_start first250 || die "relayq did not restart"
R[restart_ready_s]=$RQ_READY_S R[restart_answer_s]=$RQ_ANSWER_S R[restart_cpu]=$RQ_READY_CPU
R[restart_first250_s]=$RQ_FIRST250_S R[restart_rebuilt_s]=$RQ_REBUILT_S R[restart_rebuild_ms]=$RQ_REBUILD_MS
R[restart_total]=$(rq_total)
R[restart_first250_sent]=$FIRST250_SENT
R[rss_restart]=$(settle_rss)
log "  listening after ${R[restart_ready_s]}s, first 250 after ${R[restart_first250_s]}s, answering after ${R[restart_answer_s]}s, rebuilt after ${R[restart_rebuilt_s]}s (rebuild ${R[restart_rebuild_ms]} ms); ${R[restart_total]} queued; RSS ${R[rss_restart]} kB"

quiet_wait
log "restart: kill -9 of the idle daemon (its spool wrote a checkpoint: no redb repair), start again"
kill -KILL "$RQ_PID"; wait "$RQ_PID" 2>/dev/null; RQ_PID=
rq_start first250 || die "relayq did not start after kill -9"
R[kill_ready_s]=$RQ_READY_S R[kill_answer_s]=$RQ_ANSWER_S R[kill_cpu]=$RQ_READY_CPU
R[kill_first250_s]=$RQ_FIRST250_S R[kill_rebuilt_s]=$RQ_REBUILT_S R[kill_rebuild_ms]=$RQ_REBUILD_MS
R[kill_total]=$(rq_total)
R[rss_kill]=$(settle_rss)
R[kill_repair]=$(grep -aiE 'repair' "$RQ_LOG" | head -2 | cut -c1-200 | tr '\n' '|')
log "  listening after ${R[kill_ready_s]}s, first 250 after ${R[kill_first250_s]}s, answering after ${R[kill_answer_s]}s, rebuilt after ${R[kill_rebuilt_s]}s (rebuild ${R[kill_rebuild_ms]} ms); ${R[kill_total]} queued; RSS ${R[rss_kill]} kB"
# Each restart queued one more message: the first-250 client's.
[[ ${R[restart_total]} == "$((R[queued] + R[restart_first250_sent]))" && ${R[kill_total]} == "$((R[queued] + FIRST250_SENT))" ]] \
    || problem "queued after restarts ${R[restart_total]} / ${R[kill_total]}, ${R[queued]} before (+ $FIRST250_SENT first-250 messages)"

# A crash under load: kill -9 right after a commit (one message's `250`),
# before the idle spool's checkpoint (1 s): the open repairs the spool.
quiet_wait
log "restart: kill -9 right after a commit (no checkpoint yet: redb repair), start again"
"$PY" "$WORK/first250.py" "$RQ_PORT" "$(now)" "$FIRST_RETRY_MS" 10 >"$WORK/commit-before-kill.out" 2>&1
kill -KILL "$RQ_PID"; wait "$RQ_PID" 2>/dev/null; RQ_PID=
read -r committed _ <"$WORK/commit-before-kill.out"
[[ -n ${committed:-} && $committed != -1 ]] || problem "the message before the kill got no 250"
rq_start first250 || die "relayq did not start after kill -9 under load"
R[crash_ready_s]=$RQ_READY_S R[crash_answer_s]=$RQ_ANSWER_S R[crash_cpu]=$RQ_READY_CPU
R[crash_first250_s]=$RQ_FIRST250_S R[crash_rebuilt_s]=$RQ_REBUILT_S R[crash_rebuild_ms]=$RQ_REBUILD_MS
R[crash_total]=$(rq_total)
R[crash_repair]=$(grep -aiE 'repair' "$RQ_LOG" | head -2 | cut -c1-200 | tr '\n' '|')
log "  listening after ${R[crash_ready_s]}s, first 250 after ${R[crash_first250_s]}s, rebuilt after ${R[crash_rebuilt_s]}s (rebuild ${R[crash_rebuild_ms]} ms); ${R[crash_total]} queued"
[[ ${R[crash_total]} == "$((R[queued] + FIRST250_SENT + 1))" ]] \
    || problem "queued after the kill under load ${R[crash_total]}, expected $((R[queued] + FIRST250_SENT + 1))"

# ============================================================ 4. reads
for ((run = 1; run <= REPEAT; run++)); do
    quiet_wait
    read -r first lines total rc < <(HEAD=3 OP_TIMEOUT=$OP_TIMEOUT "$PY" "$WORK/firstline.py" "$RELAYQ_BIN" queue -c "$RQ_CONF" list)
    R[list_first_$run]=$first R[list_head_$run]=$total
    log "list | head -3 [run $run]: first line after ${first}s, pipeline done after ${total}s"
    sleep 1
    quiet_wait
    r0=$(rss_kb "$RQ_PID")
    "$PY" "$WORK/sampler.py" "$RQ_PID" "$OP_TIMEOUT" >"$WORK/sampler-$run.out" &
    SAMPLER_PID=$!
    read -r first lines total rc < <(OP_TIMEOUT=$OP_TIMEOUT "$PY" "$WORK/firstline.py" "$RELAYQ_BIN" queue -c "$RQ_CONF" --json list)
    sleep 0.2
    stop_pid "$SAMPLER_PID" sampler 5; wait "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=
    read -r s0 smax send h0 h1 ns <"$WORK/sampler-$run.out"
    R[json_s_$run]=$total R[json_first_$run]=$first
    R[json_growth_$run]=$((smax - r0)) R[json_hwm_$run]=$((h1 - h0)) R[json_after_$run]=$((send - r0))
    ((rc == 0)) || problem "list --json [run $run]: exit $rc"
    log "list --json [run $run]: ${total}s (${lines} lines), RSS ${r0} kB -> peak ${smax} kB, ${send} kB after; HWM +$((h1 - h0)) kB ($ns samples)"
    sleep 1
    quiet_wait
    t0=$(now)
    rq stats >"$WORK/stats-$run.txt" 2>&1 || problem "queue stats [run $run] failed: $(tail -2 "$WORK/stats-$run.txt" | tr '\n' '|')"
    R[stats_s_$run]=$(fsub "$(now)" "$t0")
    log "stats [run $run]: ${R[stats_s_$run]}s"
done
R[rss_after_reads]=$(rss_kb "$RQ_PID")

# ============================================================ 5. bulk delete
quiet_wait
log "delete --all of ${R[queued]} messages with an intake probe every ${PROBE_MS} ms"
"$PY" "$WORK/probe.py" "$RQ_PORT" "$PROBE_MS" "$OP_TIMEOUT" >"$WORK/probe.out" 2>"$WORK/probe.err" &
PROBE_PID=$!
sleep 1
t0=$(now)
run_bg timeout "$OP_TIMEOUT" "$RELAYQ_BIN" queue -c "$RQ_CONF" --json delete --all >"$WORK/delete.json" 2>"$WORK/delete.err"
drc=$?
R[delete_s]=$(fsub "$(now)" "$t0")
sleep 1
stop_pid "$PROBE_PID" probe 10; wait "$PROBE_PID" 2>/dev/null; PROBE_PID=
R[delete_done]=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["done"])' "$WORK/delete.json" 2>/dev/null || echo NA)
((drc == 0)) || problem "delete --all: exit $drc: $(tail -2 "$WORK/delete.err" | tr '\n' '|')"
R[delete_rate]=$(rate "${R[delete_done]}" "${R[delete_s]}")
read -r pm pr p50 p99 pmax ptxn perr pcmd <"$WORK/probe.out"
R[probe]="$pm messages, $pr replies: p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms (MAIL/RCPT/DATA/dot max ${pcmd:-?} ms); slowest transaction ${ptxn} ms; $perr errors"
R[probe_p99]=$p99 R[probe_max]=$pmax
R[rss_after_delete]=$(rss_kb "$RQ_PID")
log "  ${R[delete_done]} deleted in ${R[delete_s]}s (${R[delete_rate]}/s); probe: ${R[probe]}"

# SIGTERM in the middle of a second bulk delete.
if ((TERM_N > 0)); then
    quiet_wait
    log "refill $TERM_N, delete --all, SIGTERM after ${TERM_AFTER}s"
    fill "$RQ_PORT" "$TERM_N" rq-term
    wait_deferred "$TERM_N"
    before=$(rq_total)
    rq_stop "before the interrupted delete"
    rq_log_check delete
    rq_start || die "relayq did not restart"
    "$RELAYQ_BIN" queue -c "$RQ_CONF" --json delete --all >"$WORK/delete2.json" 2>"$WORK/delete2.err" &
    CUR_PID=$!
    sleep "$TERM_AFTER"
    rq_stop "SIGTERM during delete --all"
    R[term_exit_s]=$RQ_EXIT_S
    wait "$CUR_PID" 2>/dev/null; CUR_PID=
    R[term_errors]=$(grep -acE ' ERROR |panicked' "$RQ_LOG")
    R[term_done]=$(grep -aoE 'stopped by shutdown after [0-9]+ messages' "$RQ_LOG" | grep -oE '[0-9]+' | tail -1)
    if [[ -z ${R[term_done]} ]]; then # finished before the SIGTERM: the report has the count
        R[term_done]=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["done"])' "$WORK/delete2.json" 2>/dev/null || echo NA)
        problem "the delete of $before ended before the SIGTERM (${R[term_done]} deleted): raise TERM_N"
    fi
    rq_start || die "relayq did not start after the interrupted delete"
    R[term_left]=$(rq_total)
    R[term_before]=$before
    R[term_sum]=$(awk -v a="${R[term_done]:-0}" -v b="${R[term_left]:-0}" 'BEGIN{print a+b}')
    R[term_ok]=$([[ ${R[term_sum]} == "$before" ]] && echo "yes" || echo "NO")
    [[ ${R[term_ok]} == yes ]] || problem "interrupted delete: $before queued before, ${R[term_done]} deleted + ${R[term_left]} left = ${R[term_sum]}"
    log "  exit ${R[term_exit_s]}s after SIGTERM; ${R[term_done]} deleted + ${R[term_left]} left = ${R[term_sum]} of $before; ${R[term_errors]} ERROR lines"
    run_bg timeout "$OP_TIMEOUT" "$RELAYQ_BIN" queue -c "$RQ_CONF" --json delete --all >/dev/null 2>&1
fi
rq_stop "end"
rq_log_check end
cp "$RQ_DIR"/relayq-*.log "$WORK/" 2>/dev/null
rm -rf "$RQ_DIR/spool"

# ============================================================ 6. Postfix
if ((PF_N > 0)); then
    pf_start scale "$DEAD_PORT" "# Tried once, then a day's wait, like relayq above.
minimal_backoff_time = 1d
maximal_backoff_time = 1d
queue_run_delay = 1d"
    quiet_wait
    log "postfix: fill $PF_N x ${SIZE} B messages over $DOMAINS domains"
    fill "$PF_PORT" "$PF_N" pf
    R[pf_fill_s]=$FILL_SECS
    R[pf_fill_rate]=$(rate "$PF_N" "$FILL_SECS")
    for ((i = 0; i < OP_TIMEOUT; i++)); do
        d=$(find "$PF_DIR/queue/deferred" -type f | wc -l)
        ((d >= PF_N)) && break
        [[ -z $(find "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" -type f -print -quit) ]] && ((i > 5)) && break
        sleep 1
    done
    R[pf_queued]=$d R[pf_settle_s]=$i
    ((d == PF_N)) || problem "postfix: $PF_N sent, $d deferred"
    log "  filled in ${FILL_SECS}s (${R[pf_fill_rate]} msg/s), $d deferred ${i}s later"
    for ((run = 1; run <= REPEAT; run++)); do
        quiet_wait
        read -r first lines total rc < <(HEAD=3 OP_TIMEOUT=$OP_TIMEOUT "$PY" "$WORK/firstline.py" postqueue -c "$PF_DIR/etc" -p)
        R[pf_mailq_first_$run]=$first R[pf_mailq_head_$run]=$total
        read -r first lines total rc < <(OP_TIMEOUT=$OP_TIMEOUT "$PY" "$WORK/firstline.py" postqueue -c "$PF_DIR/etc" -p)
        R[pf_mailq_full_$run]=$total
        log "postqueue -p [run $run]: first line ${R[pf_mailq_first_$run]}s, | head -3 done ${R[pf_mailq_head_$run]}s, all ${total}s ($lines lines)"
    done
    quiet_wait
    t0=$(now)
    postsuper -c "$PF_DIR/etc" -d ALL >"$WORK/postsuper.log" 2>&1
    R[pf_delete_s]=$(fsub "$(now)" "$t0")
    R[pf_delete_rate]=$(rate "${R[pf_queued]}" "${R[pf_delete_s]}")
    log "postsuper -d ALL: ${R[pf_delete_s]}s (${R[pf_delete_rate]}/s): $(tail -1 "$WORK/postsuper.log")"
    pf_stop
fi

# ------------------------------------------------------------------- report
g() { echo "${R[$1]:-NA}"; }
runs() { # key prefix -> "a / b"
    local out= r
    for ((r = 1; r <= REPEAT; r++)); do out+="${out:+ / }$(g "$1_$r")"; done
    echo "$out"
}
runs_mb() {
    local out= r
    for ((r = 1; r <= REPEAT; r++)); do out+="${out:+ / }$(mb "$(g "$1_$r")")"; done
    echo "$out"
}
OUT=$WORK/report.txt
{
    echo "relayq scale benchmark"
    cat "$WORK/meta.txt"
    echo
    echo "relayq: $N x ${SIZE} B deferred messages over $DOMAINS domains (route to a closed port, retry in a day)"
    printf '  %-44s %-36s %s\n' measure value target
    printf '  %-44s %-36s %s\n' "fill" "$(g fill_s) s, $(g fill_rate) msg/s" ""
    printf '  %-44s %-36s %s\n' "queued after the fill (all deferred)" "$(g queued)" ""
    printf '  %-44s %-36s %s\n' "spool on disk" "$(g spool_mb) MB" ""
    printf '  %-44s %-36s %s\n' "RSS empty daemon" "$(mb "$(g rss_empty)") MB" ""
    printf '  %-44s %-36s %s\n' "RSS after the fill" "$(mb "$(g rss_fill)") MB" "<= 400 MB"
    printf '  %-44s %-36s %s\n' "RSS per queued message" "$(g rss_per_msg) B" "a few hundred B"
    printf '  %-44s %-36s %s\n' "SIGTERM with the queue full: exit" "$(g stop_s) s" ""
    printf '  %-44s %-36s %s\n' "restart (clean): listening / answering" "$(g restart_ready_s) / $(g restart_answer_s) s ($(g restart_cpu) s CPU)" ""
    printf '  %-44s %-36s %s\n' "restart (clean): first 250" "$(g restart_first250_s) s" "<= 0.5 s"
    printf '  %-44s %-36s %s\n' "restart (clean): queue rebuilt (rebuild)" "$(g restart_rebuilt_s) s ($(g restart_rebuild_ms) ms)" "<= 3 s"
    printf '  %-44s %-36s %s\n' "RSS after the clean restart" "$(mb "$(g rss_restart)") MB" "<= 400 MB"
    printf '  %-44s %-36s %s\n' "restart after kill -9 (idle): listening / answering" "$(g kill_ready_s) / $(g kill_answer_s) s ($(g kill_cpu) s CPU)" ""
    printf '  %-44s %-36s %s\n' "restart after kill -9 (idle): first 250" "$(g kill_first250_s) s" "<= 0.5 s"
    printf '  %-44s %-36s %s\n' "restart after kill -9 (idle): queue rebuilt" "$(g kill_rebuilt_s) s ($(g kill_rebuild_ms) ms)" "<= 8 s"
    printf '  %-44s %-36s %s\n' "RSS after the kill -9 restart" "$(mb "$(g rss_kill)") MB" "<= 400 MB"
    printf '  %-44s %-36s %s\n' "restart after kill -9 (after a commit): listening" "$(g crash_ready_s) s ($(g crash_cpu) s CPU)" ""
    printf '  %-44s %-36s %s\n' "restart after kill -9 (after a commit): first 250" "$(g crash_first250_s) s" "repair + 0.5 s"
    printf '  %-44s %-36s %s\n' "restart after kill -9 (after a commit): rebuilt" "$(g crash_rebuilt_s) s ($(g crash_rebuild_ms) ms)" "<= 8 s"
    printf '  %-44s %-36s %s\n' "list | head -3: first line (runs)" "$(runs list_first) s" "<= 0.2 s"
    printf '  %-44s %-36s %s\n' "list | head -3: pipeline done (runs)" "$(runs list_head) s" ""
    printf '  %-44s %-36s %s\n' "list --json > /dev/null (runs)" "$(runs json_s) s" ""
    printf '  %-44s %-36s %s\n' "  daemon RSS growth, peak (runs)" "$(runs_mb json_growth) MB" "<= 64 MB"
    printf '  %-44s %-36s %s\n' "  daemon RSS left after it (runs)" "$(runs_mb json_after) MB" ""
    printf '  %-44s %-36s %s\n' "stats (runs)" "$(runs stats_s) s" "<= 0.5 s"
    printf '  %-44s %-36s %s\n' "delete --all" "$(g delete_done) in $(g delete_s) s: $(g delete_rate) msg/s" ">= 50,000 msg/s"
    printf '  %-44s %-36s %s\n' "intake reply during it: p99 / max" "$(g probe_p99) / $(g probe_max) ms" "<= 100 ms"
    printf '  %-44s %-36s %s\n' "RSS after the delete" "$(mb "$(g rss_after_delete)") MB" ""
    if ((TERM_N > 0)); then
        printf '  %-44s %-36s %s\n' "SIGTERM ${TERM_AFTER}s into delete --all of $(g term_before)" "exit after $(g term_exit_s) s" "<= 5 s"
        printf '  %-44s %-36s %s\n' "  deleted + left after restart = before" "$(g term_done) + $(g term_left) = $(g term_sum): $(g term_ok)" "nothing lost"
        printf '  %-44s %-36s %s\n' "  ERROR lines logged" "$(g term_errors)" ""
    fi
    echo "  probe: $(g probe)"
    echo "  kill -9 (idle) restart log: $(g kill_repair)"
    echo "  kill -9 (after a commit) restart log: $(g crash_repair)"
    echo
    if ((PF_N > 0)); then
        echo "Postfix (anchor): $PF_N x ${SIZE} B deferred (relayhost [127.0.0.1]:closed port, backoff 1d), default in_flow_delay"
        printf '  %-44s %-28s\n' "fill" "$(g pf_fill_s) s, $(g pf_fill_rate) msg/s (all deferred $(g pf_settle_s) s later)"
        printf '  %-44s %-28s\n' "postqueue -p | head -3: first line (runs)" "$(runs pf_mailq_first) s"
        printf '  %-44s %-28s\n' "postqueue -p | head -3: done (runs)" "$(runs pf_mailq_head) s"
        printf '  %-44s %-28s\n' "postqueue -p > /dev/null (runs)" "$(runs pf_mailq_full) s"
        printf '  %-44s %-28s\n' "postsuper -d ALL" "$(g pf_delete_s) s, $(g pf_delete_rate) msg/s"
        echo
    fi
    echo "Times are wall clock on a shared machine (other engineers' builds run on the same 2 cores): noisy."
    echo "RSS = VmRSS of the daemon (/proc/PID/status); the list's peak is sampled every 50 ms."
    echo
    echo "Problems seen:"
    if [[ -s $PROBLEMS ]]; then sed 's/^/  /' "$PROBLEMS"; else echo "  none"; fi
} >"$OUT"
mkdir -p "$RESULTS_DIR"
RESULT_FILE=$RESULTS_DIR/scale-$(date +%Y-%m-%d-%H%M%S)$([[ $QUICK == 1 ]] && echo -quick).txt
cp "$OUT" "$RESULT_FILE"
cat "$OUT"
log "results: $RESULT_FILE"
