#!/usr/bin/env bash
# relayq intake benchmark: smtp-sink (ceiling) vs Postfix (own instance) vs relayq.
#
# Prints numbers; it is not a test. See tests/bench/README.md.
#
# Knobs (environment):
#   MESSAGES=20000        messages per case (QUICK=1: 2000)
#   SIZES="2048 102400"   message payload bytes (smtp-source -l; headers extra)
#   SESSIONS="20 100"     parallel SMTP sessions (smtp-source -s)
#   MODES="new reuse"     new = new TCP connection per message; reuse = smtp-source -d
#   RUNS=1                repeat every case; the report quotes medians
#   RECEIVERS="sink postfix relayq"
#   DKIM="none"           relayq's DKIM signing, one relayq receiver each: none,
#                         ed25519, rsa2048 (e.g. DKIM="none ed25519 rsa2048";
#                         signed receivers are reported as relayq-ed25519 etc.)
#   IDEMPOTENCY_KEY=0     relayq with idempotency keys, one relayq receiver each:
#                         0 (none), 1 (every message carries a key), or "0 1"
#                         (both, for the cost of keys: rows relayq and
#                         relayq-idem). With 1, relayq runs with
#                         smtp.dedupe_message_id = true, so every smtp-source
#                         message is keyed by its Message-Id (unique per
#                         message), and the latency probe sends a real
#                         "Idempotency-Key: lat.RUN.SEQ" header
#   CASE_TIMEOUT=120      seconds; a case still running then is stopped and
#                         reported as time-bounded (msgs = what got through)
#   DRAIN_TIMEOUT=300     seconds to wait for Postfix to empty its queue between cases
#   LAT_RATES="200 500"   offered msg/s for the latency probe ("" to skip it)
#   LAT_DURATION=20       seconds per latency probe
#   LAT_MODE=new          new | pool (latency.py --mode)
#   LAT_POOL=20           sessions in pool mode
#   LAT_SIZE=2048
#   IDLE_WAIT=30          before each case wait up to this many seconds for the
#   IDLE_PCT=25           machine to be quiet (< IDLE_PCT % CPU busy over 1 s);
#                         other agents' builds make numbers noisy. 0 disables.
#   SINK_PORT=2601 PF_PORT=2602 RQ_PORT=2603
#   BUILD=1               cargo build --release first (0: use the existing binary)
#   RELAYQ_BIN=target/release/relayq
#   KEEP=0                1: keep the temp dir (logs, Postfix config)
#   RESULTS_DIR=tests/bench/results
#
# All traffic stays on 127.0.0.1. Every wait is bounded. Everything started
# here is stopped on exit (trap).

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then MESSAGES=${MESSAGES:-2000}; LAT_DURATION=${LAT_DURATION:-5}; fi
MESSAGES=${MESSAGES:-20000}
SIZES=${SIZES:-"2048 102400"}
SESSIONS=${SESSIONS:-"20 100"}
MODES=${MODES:-"new reuse"}
RUNS=${RUNS:-1}
RECEIVERS=${RECEIVERS:-"sink postfix relayq"}
DKIM=${DKIM:-none}
IDEMPOTENCY_KEY=${IDEMPOTENCY_KEY:-0}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
LAT_RATES=${LAT_RATES-"200 500"}
LAT_DURATION=${LAT_DURATION:-20}
LAT_MODE=${LAT_MODE:-new}
LAT_POOL=${LAT_POOL:-20}
LAT_SIZE=${LAT_SIZE:-2048}
IDLE_WAIT=${IDLE_WAIT:-30}
IDLE_PCT=${IDLE_PCT:-25}
SINK_PORT=${SINK_PORT:-2601}
PF_PORT=${PF_PORT:-2602}
RQ_PORT=${RQ_PORT:-2603}
BUILD=${BUILD:-1}
RELAYQ_BIN=${RELAYQ_BIN:-$ROOT/target/release/relayq}
KEEP=${KEEP:-0}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}

SENDER=bench@example.com
RCPT=sink@example.net

# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"
has() { [[ " $RECEIVERS " == *" $1 "* ]]; }
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }

for v in MESSAGES RUNS CASE_TIMEOUT DRAIN_TIMEOUT IDLE_WAIT IDLE_PCT LAT_DURATION LAT_POOL LAT_SIZE SINK_PORT PF_PORT RQ_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
for s in $SIZES $SESSIONS; do [[ $s =~ ^[0-9]+$ && $s -gt 0 ]] || die "bad size/session count '$s'"; done
for m in $MODES; do [[ $m == new || $m == reuse ]] || die "MODES: 'new' or 'reuse', got '$m'"; done
for d in $DKIM; do [[ $d == none || $d == ed25519 || $d == rsa2048 ]] || die "DKIM: none, ed25519 or rsa2048, got '$d'"; done
for k in $IDEMPOTENCY_KEY; do [[ $k == 0 || $k == 1 ]] || die "IDEMPOTENCY_KEY: 0, 1 or \"0 1\", got '$k'"; done
(( RUNS >= 1 && RUNS <= 20 )) || die "RUNS must be 1..20"
(( CASE_TIMEOUT >= 5 && CASE_TIMEOUT <= 3600 )) || die "CASE_TIMEOUT must be 5..3600"

# ---------------------------------------------------------------- dependencies
NEED_PKGS=()
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null && command -v postfix >/dev/null \
    || NEED_PKGS+=(postfix)
command -v python3 >/dev/null || NEED_PKGS+=(python3)
INSTALLED_POSTFIX=0
if ((${#NEED_PKGS[@]})); then
    [[ $EUID == 0 ]] || die "need ${NEED_PKGS[*]}; run as root or install them"
    log "installing ${NEED_PKGS[*]} (apt-get)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "${NEED_PKGS[@]}" >/dev/null \
        || die "apt-get install ${NEED_PKGS[*]} failed"
    [[ " ${NEED_PKGS[*]} " == *" postfix "* ]] && INSTALLED_POSTFIX=1
fi
PY=$(command -v python3)
if [[ $INSTALLED_POSTFIX == 1 ]]; then
    # The package may have started (or will start at boot) the system Postfix
    # on port 25; we installed it only for its tools and our own instance.
    if postfix status >/dev/null 2>&1; then log "stopping the system Postfix the package started"; postfix stop >/dev/null 2>&1; fi
    if command -v systemctl >/dev/null; then systemctl disable --now postfix >/dev/null 2>&1 || true; fi
fi
if has postfix && [[ $EUID != 0 ]]; then
    log "not root: skipping the Postfix instance (needs root to set queue ownership)"
    RECEIVERS=${RECEIVERS//postfix/}
fi
[[ $EUID == 0 ]] && SINK_USER=(-u postfix) || SINK_USER=()
if [[ $EUID == 0 ]] && ! id postfix >/dev/null 2>&1; then die "user 'postfix' missing"; fi

for p in $SINK_PORT $PF_PORT $RQ_PORT; do port_busy "$p" && die "port 127.0.0.1:$p is already in use"; done

# ------------------------------------------------------------------ workspace
WORK=$(mktemp -d /tmp/relayq-bench.XXXX) || die "mktemp"
chmod 755 "$WORK" # Postfix daemons (user postfix) must traverse it
CASES=$WORK/cases.tsv
LATF=$WORK/latency.jsonl
PROBLEMS=$WORK/problems.txt
: >"$CASES"; : >"$LATF"; : >"$PROBLEMS"
SINK_PID= PF_DIR= PF_MASTER= RQ_PID= RQ_DIR= CUR_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 15
    pf_stop
    [[ -n $SINK_PID ]] && stop_pid "$SINK_PID" smtp-sink 5
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# Run a command in the background and wait for it, so a signal to this script
# reaches the trap at once and the trap can stop the command.

# ------------------------------------------------------------------ receivers
sink_start() {
    # -m: max simultaneous sessions (default 256); backlog 1024.
    smtp-sink "${SINK_USER[@]}" -m 1024 "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT" 10 || die "smtp-sink did not listen on $SINK_PORT: $(tail -3 "$WORK/sink.log")"
}

pf_drain() { # wait until Postfix has delivered everything to the sink
    local i n
    for ((i = 0; i < DRAIN_TIMEOUT * 4; i++)); do
        n=$(pf_queue_count)
        ((n == 0)) && return 0
        if ((i % 4 == 0)) && [[ -n $(find "$PF_DIR/queue/deferred" -type f -print -quit 2>/dev/null) ]]; then
            echo "postfix: deferred mail in the queue (delivery to the sink failed); see maillog" >>"$PROBLEMS"
            return 1
        fi
        sleep 0.25
    done
    echo "postfix: queue not empty after ${DRAIN_TIMEOUT}s ($(pf_queue_count) files)" >>"$PROBLEMS"
    return 1
}

# rq_label DKIM IDEM: the relayq receiver's name for a DKIM setting and an
# IDEMPOTENCY_KEY setting (relayq, relayq-ed25519, relayq-idem, ...).
rq_label() {
    local label=relayq
    [[ $1 != none ]] && label="$label-$1"
    [[ ${2:-0} == 1 ]] && label="$label-idem"
    echo "$label"
}

# rq_dkim SETTING: the [[dkim]] block signing the bench senders' mail
# (bench@example.com, latency@bench.example.com) with a key made once per run.
rq_dkim() {
    local key=$WORK/dkim-$1.pem
    case $1 in
        none) return 0 ;;
        ed25519) [[ -s $key ]] || openssl genpkey -algorithm ed25519 -out "$key" 2>/dev/null ;;
        rsa2048) [[ -s $key ]] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null ;;
    esac
    [[ -s $key ]] || die "openssl could not make a $1 key"
    printf '[[dkim]]\ndomain = "example.com"\nselector = "bench"\nprivate_key = "%s"\n' "$key"
}

rq_seq=0
# rq_start [DKIM [IDEM]]: a fresh relayq, signing with the DKIM setting
# (default none); with IDEM=1, every smtp-source message is keyed by its
# Message-Id (smtp.dedupe_message_id).
rq_start() {
    local dedupe=false
    [[ ${2:-0} == 1 ]] && dedupe=true
    local dkim_block
    dkim_block=$(rq_dkim "${1:-none}") || { echo "relayq: could not make a ${1} DKIM key with openssl" >>"$PROBLEMS"; return 1; }
    rq_seq=$((rq_seq + 1))
    RQ_DIR=$WORK/relayq-$rq_seq
    mkdir -p "$RQ_DIR"
    cat >"$RQ_DIR/relayq.toml" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$RQ_DIR/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = 2000
dedupe_message_id = $dedupe
# Like the Postfix instance, relay everything to the smtp-sink; no DNS.
[[route]]
domains = ["*"]
host = "127.0.0.1"
port = $SINK_PORT
tls = "none"
[dns]
nameservers = ["127.0.0.1:9"]
$dkim_block
EOF
    "$RELAYQ_BIN" serve --config "$RQ_DIR/relayq.toml" >"$RQ_DIR/relayq.log" 2>&1 &
    RQ_PID=$!
    if ! wait_port "$RQ_PORT" 30; then
        echo "relayq: did not listen on $RQ_PORT within 30s; log: $(tail -5 "$RQ_DIR/relayq.log")" >>"$PROBLEMS"
        stop_pid "$RQ_PID" relayq 5; RQ_PID=
        return 1
    fi
    kill -0 "$RQ_PID" 2>/dev/null || { echo "relayq: exited right after start: $(tail -5 "$RQ_DIR/relayq.log")" >>"$PROBLEMS"; RQ_PID=; return 1; }
}

# rq_drain N: wait until relayq has logged a final status (sent/bounced) for
# N messages, i.e. relayed everything to the sink, like pf_drain. Bounded by
# DRAIN_TIMEOUT, and gives up after 20 s without progress.
rq_drain() {
    local want=$1 i n=0 last=-1 still=0
    for ((i = 0; i < DRAIN_TIMEOUT * 4; i++)); do
        n=$(grep -acE 'status=(sent|bounced|expired)' "$RQ_DIR/relayq.log")
        ((n >= want)) && return 0
        if ((n == last)); then
            still=$((still + 1))
            ((still >= 80)) && break
        else
            still=0 last=$n
        fi
        kill -0 "$RQ_PID" 2>/dev/null || break
        sleep 0.25
    done
    echo "relayq: only $n of $want messages relayed to the sink when the drain wait ended (deferred: $(grep -ac 'status=deferred' "$RQ_DIR/relayq.log"))" >>"$PROBLEMS"
    return 1
}

# rq_stop LABEL [EXPECTED]: stop relayq, check its log, and compare the number
# of messages it accounts for (queued at shutdown + sent + bounced) with
# EXPECTED (messages acknowledged with 250). Sets RQ_QUEUED, RQ_SENT, RQ_ACKED
# (empty if the shutdown log line was not found) and RQ_SPOOL
# ("apparent_bytes allocated_bytes"), then deletes the spool to bound disk use.
rq_stop() {
    RQ_QUEUED= RQ_SPOOL= RQ_ACKED= RQ_SENT=
    [[ -n $RQ_PID ]] || return 0
    local label=$1 expected=${2:-} rc st
    if ! kill -0 "$RQ_PID" 2>/dev/null; then
        wait "$RQ_PID" 2>/dev/null; rc=$?
        echo "relayq [$label]: process died during the case (exit status $rc); log tail: $(tail -5 "$RQ_DIR/relayq.log" | tr '\n' '|')" >>"$PROBLEMS"
    else
        stop_pid "$RQ_PID" relayq 15; st=$?
        wait "$RQ_PID" 2>/dev/null; rc=$?
        ((st == 0)) || echo "relayq [$label]: did not exit within 15s of SIGTERM (killed)" >>"$PROBLEMS"
        ((rc == 0)) || echo "relayq [$label]: exit status $rc after SIGTERM" >>"$PROBLEMS"
    fi
    RQ_PID=
    local bad
    bad=$(grep -aciE 'panic|\bERROR\b|\bWARN' "$RQ_DIR/relayq.log")
    if ((bad > 0)); then
        {
            echo "relayq [$label]: $bad ERROR/WARN/panic log lines; first ones:"
            grep -aiE 'panic|\bERROR\b|\bWARN' "$RQ_DIR/relayq.log" | head -5 | cut -c1-300 | sed 's/^/    /'
        } >>"$PROBLEMS"
    fi
    # relayq logs "stopped; N messages stay queued in the spool" on shutdown,
    # and one "status=sent|bounced" line per recipient (1 per message here).
    RQ_QUEUED=$(grep -aoE '[0-9]+ messages stay queued' "$RQ_DIR/relayq.log" | tail -1 | cut -d' ' -f1)
    local sent bounced
    sent=$(grep -acE 'status=sent' "$RQ_DIR/relayq.log")
    bounced=$(grep -acE 'status=(bounced|expired)' "$RQ_DIR/relayq.log")
    RQ_SENT=$sent
    RQ_ACKED=
    [[ -n $RQ_QUEUED ]] && RQ_ACKED=$((RQ_QUEUED + sent + bounced))
    if [[ -n $expected && -n $RQ_ACKED && $RQ_ACKED != "$expected" ]]; then
        echo "relayq [$label]: $expected messages got 250, but relayq accounts for $RQ_ACKED ($RQ_QUEUED queued at shutdown + $sent sent + $bounced bounced)" >>"$PROBLEMS"
    fi
    ((bounced > 0)) && echo "relayq [$label]: $bounced messages bounced (delivery to the sink should not fail): $(grep -aE 'status=(bounced|expired)' "$RQ_DIR/relayq.log" | head -1 | cut -c1-250)" >>"$PROBLEMS"
    RQ_SPOOL="$(du -sb "$RQ_DIR/spool" 2>/dev/null | cut -f1) $(du -s -B1 "$RQ_DIR/spool" 2>/dev/null | cut -f1)"
    if [[ $KEEP != 1 ]]; then rm -rf "$RQ_DIR/spool"; fi # 100 KB x 20k msgs = several GB
}

# ---------------------------------------------------------------------- cases
cpu_snap() { "$PY" "$HERE/proc_cpu.py" snap "$1" >"$2"; }
cpu_diff() { "$PY" "$HERE/proc_cpu.py" diff "$1" "$2"; }
HZ=$(getconf CLK_TCK)
# run_case run receiver port pid mode sessions size
run_case() {
    local run=$1 rcv=$2 port=$3 pid=$4 mode=$5 sess=$6 size=$7
    local tag="$rcv-$mode-s$sess-l$size-r$run"
    local out=$WORK/$tag.out err=$WORK/$tag.err
    local dflag=() status=ok
    [[ $mode == reuse ]] && dflag=(-d)
    quiet_wait
    cpu_snap "$pid" "$WORK/$tag.cpu0"
    local t0 t1 rc st0 st1 ct0 ct1 sb0 stt0 sb1 stt1
    read -r sb0 stt0 < <(stat_ticks)
    child_ticks; ct0=$CHILD_TICKS
    t0=$(now)
    run_bg timeout -s TERM "$CASE_TIMEOUT" smtp-source -c -s "$sess" -m "$MESSAGES" -l "$size" "${dflag[@]}" \
        -f "$SENDER" -t "$RCPT" "127.0.0.1:$port" >"$out" 2>"$err"
    rc=$?
    t1=$(now)
    child_ticks; ct1=$CHILD_TICKS
    read -r sb1 stt1 < <(stat_ticks)
    cpu_snap "$pid" "$WORK/$tag.cpu1"
    local secs count
    secs=$(fsub "$t1" "$t0")
    count=$(tr '\r' '\n' <"$out" | grep -E '^[0-9]+$' | tail -1)
    count=${count:-0}
    if ((rc == 0)); then
        count=$MESSAGES
    elif ((rc == 124)); then
        status=timebound
        # smtp-source counts a message when its final dot is *sent*; up to
        # $sess of those may not have been answered yet.
        count=$((count > sess ? count - sess : 0))
    else
        status=FAIL
        echo "$rcv [$mode s=$sess l=$size run=$run]: smtp-source exit $rc after ~$count msgs: $(grep -v '^$' "$err" | head -3 | tr '\n' '|')" >>"$PROBLEMS"
        count=$((count > sess ? count - sess : 0))
    fi
    local cpu_in cpu_all="" by
    cpu_in=$(cpu_diff "$WORK/$tag.cpu0" "$WORK/$tag.cpu1" | awk '{print $1}')
    by=$(cpu_diff "$WORK/$tag.cpu0" "$WORK/$tag.cpu1" | cut -s -d' ' -f2-)
    # CPU of everything else on the machine during the case, in % of all CPUs:
    # busy ticks minus receiver minus client (smtp-source).
    local client=$((ct1 - ct0)) other
    other=$(awk -v b="$((sb1 - sb0))" -v t="$((stt1 - stt0))" -v r="${cpu_in:-0}" -v c="$client" \
        'BEGIN{ o = b - r - c; if (o < 0) o = 0; printf "%d", (t > 0 ? 100*o/t : 0) }')
    local extra="client_ticks=$client other_pct=$other"
    if [[ $rcv == postfix ]]; then
        local td0 td1
        td0=$(now)
        pf_drain
        td1=$(now)
        cpu_snap "$pid" "$WORK/$tag.cpu2"
        cpu_all=$(cpu_diff "$WORK/$tag.cpu0" "$WORK/$tag.cpu2" | awk '{print $1}')
        by=$(cpu_diff "$WORK/$tag.cpu0" "$WORK/$tag.cpu2" | cut -s -d' ' -f2-)
        extra="$extra drain_s=$(fsub "$td1" "$td0")"
    elif [[ $rcv == relayq* ]]; then
        kill -0 "$pid" 2>/dev/null || status=DIED
        local td0 td1
        td0=$(now)
        [[ $status != DIED ]] && rq_drain "$count"
        td1=$(now)
        cpu_snap "$pid" "$WORK/$tag.cpu2"
        cpu_all=$(cpu_diff "$WORK/$tag.cpu0" "$WORK/$tag.cpu2" | awk '{print $1}')
        local expect=
        [[ $status == ok ]] && expect=$count
        rq_stop "$mode s=$sess l=$size run=$run" "$expect"
        if [[ -n $RQ_ACKED && $status != ok && $status != DIED ]]; then
            count=$RQ_ACKED # exact number acknowledged, better than smtp-source's counter
        fi
        local ab al
        read -r ab al <<<"$RQ_SPOOL"
        extra="$extra drain_s=$(fsub "$td1" "$td0") queued=${RQ_QUEUED:-?} sent=${RQ_SENT:-?} spool_bytes=${ab:-0} spool_alloc=${al:-0}"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$run" "$rcv" "$mode" "$sess" "$size" "$count" "$secs" "${cpu_in:-NA}" "${cpu_all:-NA}" "$status" "$extra" "$by" >>"$CASES"
    log "  $(printf '%-7s %-5s s=%-3s l=%-6s' "$rcv" "$mode" "$sess" "$size") msgs=$count secs=$secs status=$status cpu_ticks=${cpu_in:-NA}${cpu_all:+/$cpu_all} $extra"
}

latency() { # receiver port rate [IDEM]
    local rcv=$1 port=$2 rate=$3 f=$WORK/lat-$1-$3.json keyed=()
    [[ ${4:-0} == 1 ]] && keyed=(--idempotency-key)
    run_bg timeout $((LAT_DURATION + 120)) "$PY" "$HERE/latency.py" --port "$port" --rate "$rate" --duration "$LAT_DURATION" \
        --size "$LAT_SIZE" --mode "$LAT_MODE" --pool "$LAT_POOL" --label "$rcv" "${keyed[@]}" --json >"$f" 2>"$f.err"
    if [[ -s $f ]]; then
        cat "$f" >>"$LATF"
        "$PY" "$HERE/report.py" --lat-line "$f" >&2
        if [[ $rcv == relayq* ]]; then
            "$PY" "$HERE/report.py" --lat-problem "$f" >>"$PROBLEMS"
            local ok
            ok=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$f")
            rq_drain "$ok"
            rq_stop "latency $rate/s" "$ok"
        fi
    else
        echo "latency probe $rcv $rate/s produced no output: $(tail -3 "$f.err")" >>"$PROBLEMS"
    fi
}

# ------------------------------------------------------------------- metadata
{
    echo "date: $(date -Iseconds)"
    echo "host: $(uname -srm); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')); $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "disk: $(df -hT "$WORK" | awk 'NR==2{print $1, $2, $3}') (temp dir $WORK; Postfix queue and relayq spool both here)"
    echo "postfix: $(postconf -d mail_version 2>/dev/null | cut -d' ' -f3); smtp-source/smtp-sink from the same package"
    echo "python: $("$PY" --version 2>&1)"
    echo "settings: MESSAGES=$MESSAGES SIZES='$SIZES' SESSIONS='$SESSIONS' MODES='$MODES' DKIM='$DKIM' IDEMPOTENCY_KEY='$IDEMPOTENCY_KEY' RUNS=$RUNS CASE_TIMEOUT=$CASE_TIMEOUT LAT_RATES='$LAT_RATES' LAT_DURATION=$LAT_DURATION LAT_MODE=$LAT_MODE LAT_SIZE=$LAT_SIZE"
    echo "clk_tck: $(getconf CLK_TCK)"
    # Context for every fsync-bound number below: latency of one 4 KB
    # write + fdatasync in the temp dir, 200 times.
    "$PY" - "$WORK" <<'PYEOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
lat = []
for i in range(200):
    os.pwrite(fd, os.urandom(4096), (i % 16) * 4096)
    t = time.perf_counter(); os.fdatasync(fd); lat.append(time.perf_counter() - t)
os.close(fd); os.unlink(path)
lat.sort()
print(f"fdatasync of 4 KB in the temp dir: p50 {lat[100]*1000:.2f} ms, p90 {lat[180]*1000:.2f} ms, max {lat[-1]*1000:.2f} ms (200 samples)")
PYEOF
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$WORK/meta.txt"

# ---------------------------------------------------------------------- relayq
RQ_OK=0
if has relayq; then
    if [[ $BUILD == 1 ]]; then
        log "cargo build --release"
        (cd "$ROOT" && timeout 1800 cargo build --release -q 2>"$WORK/build.log") \
            || { echo "relayq: cargo build --release failed: $(tail -5 "$WORK/build.log" | tr '\n' '|')" >>"$PROBLEMS"; }
    fi
    if [[ -x $RELAYQ_BIN ]]; then
        if rq_start; then
            RQ_OK=1
            rq_stop probe
        fi
    else
        echo "relayq: no binary at $RELAYQ_BIN" >>"$PROBLEMS"
    fi
    ((RQ_OK)) || log "relayq unavailable; see the problems section"
    echo "relayq: $("$RELAYQ_BIN" --version 2>/dev/null | head -1) ($RELAYQ_BIN, $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit'))" >>"$WORK/meta.txt"
fi

# ----------------------------------------------------------------------- main
# The sink always runs: it is the relayhost of the Postfix instance.
sink_start
if has postfix; then pf_start intake "$SINK_PORT"; fi

log "work dir $WORK; $MESSAGES msgs/case; sizes $SIZES; sessions $SESSIONS; modes $MODES; runs $RUNS"
for ((run = 1; run <= RUNS; run++)); do
    for mode in $MODES; do
        for sess in $SESSIONS; do
            for size in $SIZES; do
                log "run $run: $mode connection, $sess sessions, $size bytes"
                has sink && run_case "$run" sink "$SINK_PORT" "$SINK_PID" "$mode" "$sess" "$size"
                if has postfix; then
                    pf_drain
                    run_case "$run" postfix "$PF_PORT" "$PF_MASTER" "$mode" "$sess" "$size"
                fi
                if has relayq && ((RQ_OK)); then
                    for dkim in $DKIM; do
                        for idem in $IDEMPOTENCY_KEY; do
                            if rq_start "$dkim" "$idem"; then
                                run_case "$run" "$(rq_label "$dkim" "$idem")" "$RQ_PORT" "$RQ_PID" "$mode" "$sess" "$size"
                            fi
                        done
                    done
                fi
            done
        done
    done
done

if [[ -n $LAT_RATES ]]; then
    for rate in $LAT_RATES; do
        log "latency probe: $rate msg/s offered for ${LAT_DURATION}s, mode $LAT_MODE, $LAT_SIZE bytes"
        if has sink; then has postfix && pf_drain; quiet_wait; latency sink "$SINK_PORT" "$rate"; fi
        if has postfix; then pf_drain; quiet_wait; latency postfix "$PF_PORT" "$rate"; fi
        for dkim in $DKIM; do
            for idem in $IDEMPOTENCY_KEY; do
                if has relayq && ((RQ_OK)) && rq_start "$dkim" "$idem"; then
                    has postfix && pf_drain
                    quiet_wait
                    latency "$(rq_label "$dkim" "$idem")" "$RQ_PORT" "$rate" "$idem"
                    rq_stop "latency $rate/s" # no-op if latency() stopped it already
                fi
            done
        done
    done
fi

if has postfix; then
    pf_drain
    n=$(grep -ciE 'warning|fatal|panic' "$PF_DIR/maillog")
    ((n > 0)) && echo "postfix: $n warning/fatal lines in its maillog (e.g. $(grep -iE 'warning|fatal|panic' "$PF_DIR/maillog" | head -1 | cut -c1-200))" >>"$PROBLEMS"
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta.txt"
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y-%m-%d-%H%M%S)
[[ $QUICK == 1 ]] && STAMP="$STAMP-quick"
OUT=$RESULTS_DIR/intake-$STAMP.txt
"$PY" "$HERE/report.py" "$WORK" | tee "$OUT"
log "written to $OUT"
