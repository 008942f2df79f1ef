#!/usr/bin/env bash
# relayq delivery benchmark: relayq vs Postfix (own instance), both relaying
# to smtp-sink, mail spread over 100 domains (d1.test ... d100.test).
#
# Prints numbers; it is not a test. See tests/bench/README.md ("Delivery
# benchmark") for what each case does and how to read the output.
#
# Knobs (environment):
#   DRAIN_MESSAGES=100000  queue size for the drain case (QUICK=1: 5000)
#   E2E_MESSAGES=20000     messages for the end-to-end case (QUICK=1: 5000)
#   DOMAINS=100            recipient domains d1.test .. dN.test (MX via dnsmasq)
#   SIZE=2048              payload bytes (smtp-source -l; headers extra)
#   SESSIONS=20            concurrent SMTP sessions filling the queue
#   LAT_RATE=500           offered msg/s for the accepted->delivered probe
#   LAT_DURATION=20        seconds (QUICK=1: 5); LAT_MODE=pool|new (pool: SESSIONS
#                          persistent sessions; new: a connection per message)
#   CASES="drain e2e latency"  (also "throttle": a sink serving THROTTLE_SESSIONS
#                          sessions that answers 421 beyond; time to drain THROTTLE_MESSAGES)
#   RULES=0                1: relayq gets [[destination]] rules that match none of the
#                          mail (a domain rule with a rate, an mx: rule): what rules cost
#                          when they do not bind
#   WEBHOOK=0              1: relayq gets one [[webhook]] subscribed to delivered and
#                          bounced, posting to a local receiver that answers 200 at once
#                          (tests/bench/webhook_sink.py on WEBHOOK_PORT=2616): what events cost
#   DNSSEC=0               1: the zones are served by BIND (named, tests/bench/signed_zones.sh)
#                          under a DNSSEC-signed root instead of dnsmasq: a signed test.,
#                          every dN.test and mx.bench.test delegated from it without DS
#                          (provably insecure), relayq given the root's key as trust anchor
#   DANE=0                 1: relayq runs with [delivery] dane = true (implies DNSSEC=1): what
#                          DANE costs for mail to domains without DNSSEC. Compare with
#                          DNSSEC=1 DANE=0 (same DNS server, DANE off). With dnsmasq
#                          (no DNSSEC at all) dane = true would defer every message: the
#                          validator cannot tell an unsigned zone from a stripped one
#   THROTTLE_MESSAGES=10000 THROTTLE_SESSIONS=4 THROTTLE_PORT=2615
#   SYSTEMS="relayq postfix"
#   FILL_TIMEOUT=900 DRAIN_TIMEOUT=900 STALL=60  bounds (seconds); a drain
#                          that makes no progress for STALL seconds stops
#   IDLE_WAIT=10 IDLE_PCT=40  wait (bounded) for a quieter machine before a case
#   SINK_PORT=2611 PF_PORT=2612 RQ_PORT=2613 TSINK_PORT=2614 DNS_PORT=2653
#   BUILD=1  RELAYQ_BIN=target/release/relayq  KEEP=0  RESULTS_DIR=tests/bench/results
#   PERF_DIR=              set: `perf record` samples each relayq run (relayq alone,
#                          not the sink or the clients) into PERF_DIR/relayq-N.data;
#                          read with `perf report -i FILE --no-children --sort sym`
#
# Network: only 127.0.0.1. relayq never uses the system resolver here: its
# [dns] nameservers is the dnsmasq (DNSSEC=1: named) started by this script on 127.0.0.1:DNS_PORT,
# which answers MX dN.test -> mx.bench.test -> 127.0.0.1 and nothing else,
# with a TTL of one hour (dnsmasq's default for its own records is 0, which
# would make every delivery pass ask again, unlike any real MX).
# Every wait is bounded; everything started here is stopped on exit (trap).

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DRAIN_MESSAGES=${DRAIN_MESSAGES:-5000}; E2E_MESSAGES=${E2E_MESSAGES:-5000}; LAT_DURATION=${LAT_DURATION:-5}
fi
DRAIN_MESSAGES=${DRAIN_MESSAGES:-100000}
E2E_MESSAGES=${E2E_MESSAGES:-20000}
DOMAINS=${DOMAINS:-100}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-20}
LAT_RATE=${LAT_RATE:-500}
LAT_DURATION=${LAT_DURATION:-20}
LAT_MODE=${LAT_MODE:-pool}
CASES=${CASES:-"drain e2e latency"}
RULES=${RULES:-0}
WEBHOOK=${WEBHOOK:-0}
WEBHOOK_PORT=${WEBHOOK_PORT:-2616}
DANE=${DANE:-0}
DNSSEC=${DNSSEC:-$DANE}
THROTTLE_MESSAGES=${THROTTLE_MESSAGES:-10000}
THROTTLE_SESSIONS=${THROTTLE_SESSIONS:-4}
THROTTLE_PORT=${THROTTLE_PORT:-2615}
SYSTEMS=${SYSTEMS:-"relayq postfix"}
FILL_TIMEOUT=${FILL_TIMEOUT:-900}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}
STALL=${STALL:-60}
IDLE_WAIT=${IDLE_WAIT:-10}
IDLE_PCT=${IDLE_PCT:-40}
SINK_PORT=${SINK_PORT:-2611}
PF_PORT=${PF_PORT:-2612}
RQ_PORT=${RQ_PORT:-2613}
TSINK_PORT=${TSINK_PORT:-2614}
DNS_PORT=${DNS_PORT:-2653}
BUILD=${BUILD:-1}
RELAYQ_BIN=${RELAYQ_BIN:-$ROOT/target/release/relayq}
KEEP=${KEEP:-0}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}

SENDER=bench@example.com

# shellcheck source=tests/bench/common.sh
. "$HERE/common.sh"
case_on() { [[ " $CASES " == *" $1 "* ]]; }
sys_on() { [[ " $SYSTEMS " == *" $1 "* ]]; }
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN{ if (b > 0) printf f, a/b; else printf "NA" }'; }

for v in DRAIN_MESSAGES E2E_MESSAGES DOMAINS SIZE SESSIONS LAT_RATE LAT_DURATION FILL_TIMEOUT DRAIN_TIMEOUT STALL \
    IDLE_WAIT IDLE_PCT SINK_PORT PF_PORT RQ_PORT TSINK_PORT DNS_PORT RULES WEBHOOK WEBHOOK_PORT THROTTLE_MESSAGES THROTTLE_SESSIONS THROTTLE_PORT \
    DANE DNSSEC; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((DOMAINS >= 1 && DOMAINS <= 1000)) || die "DOMAINS must be 1..1000"
((DANE == 0 || DNSSEC == 1)) || die "DANE=1 needs DNSSEC=1 (dnsmasq serves no DNSSEC)"
((DRAIN_MESSAGES % DOMAINS == 0 && E2E_MESSAGES % DOMAINS == 0)) || die "message counts must be multiples of DOMAINS"
((SESSIONS >= 1 && SESSIONS <= 200)) || die "SESSIONS must be 1..200"
((FILL_TIMEOUT <= 3600 && DRAIN_TIMEOUT <= 3600 && LAT_DURATION <= 600)) || die "timeouts too large"
[[ $EUID == 0 ]] || die "run as root (Postfix instance, smtp-sink -u postfix)"

# ---------------------------------------------------------------- dependencies
NEED_PKGS=()
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null && command -v postfix >/dev/null || NEED_PKGS+=(postfix)
command -v dnsmasq >/dev/null || NEED_PKGS+=(dnsmasq-base)
if [[ $DNSSEC == 1 ]]; then
    command -v named >/dev/null || NEED_PKGS+=(bind9)
    command -v dnssec-signzone >/dev/null || NEED_PKGS+=(bind9-utils)
fi
command -v python3 >/dev/null || NEED_PKGS+=(python3)
install_packages "${NEED_PKGS[@]}"
PY=$(command -v python3)
id postfix >/dev/null 2>&1 || die "user 'postfix' missing"

for p in $SINK_PORT $PF_PORT $RQ_PORT $TSINK_PORT $DNS_PORT $THROTTLE_PORT; do port_busy "$p" && die "port $p is already in use"; done

# ------------------------------------------------------------------ workspace
WORK=$(mktemp -d /tmp/relayq-dbench.XXXX) || die "mktemp"
chmod 755 "$WORK"
PROBLEMS=$WORK/problems.txt RES=$WORK/results.txt
: >"$PROBLEMS"; : >"$RES"
SINK_PID= TSINK_PID= DNS_PID= HOOK_PID= PF_DIR= PF_MASTER= RQ_PID= CUR_PID= THR_PID=
problem() { echo "$*" >>"$PROBLEMS"; log "problem: $*"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_PID ]] && kill -TERM "$CUR_PID" 2>/dev/null
    [[ -n $RQ_PID ]] && stop_pid "$RQ_PID" relayq 15
    pf_stop
    [[ -n $SINK_PID ]] && stop_pid "$SINK_PID" sink 5
    [[ -n $TSINK_PID ]] && stop_pid "$TSINK_PID" timed-sink 5
    [[ -n $THR_PID ]] && stop_pid "$THR_PID" throttle-sink 5
    [[ -n $DNS_PID ]] && stop_pid "$DNS_PID" dns-server 5
    [[ -n $HOOK_PID ]] && stop_pid "$HOOK_PID" webhook-sink 5
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# ------------------------------------------------------------ CPU accounting
HZ=$(getconf CLK_TCK)
cpu_total() { "$PY" "$HERE/proc_cpu.py" snap "$1" >"$2"; }
cpu_diff() { "$PY" "$HERE/proc_cpu.py" diff "$1" "$2"; }
# Machine-wide busy ticks around a phase, to report how much CPU *others* used.
M0=; mark0() { read -r MB0 MT0 < <(stat_ticks); }
other_pct() { # ours_ticks -> % of all CPUs used by other processes since mark0
    local b1 t1; read -r b1 t1 < <(stat_ticks)
    awk -v b="$((b1 - MB0))" -v t="$((t1 - MT0))" -v o="$1" 'BEGIN{ x = b - o; if (x < 0) x = 0; printf "%d", (t > 0 ? 100*x/t : 0) }'
}

# Follows a log file from byte OFFSET, counting lines matching REGEX, until
# COUNT are seen; bounded by TIMEOUT and by STALL seconds without progress.
# Prints "count t_first t_done status" (unix times when seen; status ok|timeout|stall|died).
cat >"$WORK/follow.py" <<'EOF'
import os, re, sys, time
path, rx, want, offset, timeout, stall, pid = sys.argv[1], re.compile(sys.argv[2].encode()), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
n, first, buf, start = 0, None, b"", time.time()
last_progress = start
status = "timeout"
with open(path, "rb") as f:
    f.seek(offset)
    while time.time() - start < timeout:
        chunk = f.read(1 << 20)
        if chunk:
            lines = (buf + chunk).split(b"\n")
            buf = lines.pop()
            k = sum(1 for l in lines if rx.search(l))
            if k:
                n += k
                last_progress = time.time()
                first = first or last_progress
            if n >= want:
                status = "ok"; break
            continue
        if time.time() - last_progress > stall:
            status = "stall"; break
        if pid > 0:
            try: os.kill(pid, 0)
            except OSError: status = "died"; break
        time.sleep(0.05)
print(n, f"{first or 0:.3f}", f"{time.time():.3f}", status)
EOF
follow() { run_bg "$PY" "$WORK/follow.py" "$@"; }
fsize() { stat -c %s "$1" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- components
dns_start() {
    if [[ $DNSSEC == 1 ]]; then
        named_start
        return
    fi
    local args=() i
    for ((i = 1; i <= DOMAINS; i++)); do args+=("--mx-host=d$i.test,mx.bench.test,10"); done
    dnsmasq --no-daemon --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
        --no-dhcp-interface=lo --pid-file= --cache-size=1000 --local-ttl=3600 --host-record=mx.bench.test,127.0.0.1 "${args[@]}" \
        >"$WORK/dnsmasq.log" 2>&1 &
    DNS_PID=$!
    sleep 0.5
    kill -0 "$DNS_PID" 2>/dev/null || die "dnsmasq did not start: $(tail -3 "$WORK/dnsmasq.log")"
}
# DNSSEC=1: BIND with a signed root and the bench's zones delegated
# insecurely (tests/bench/signed_zones.sh); $WORK/named/trust-anchor holds
# the root's key for relayq's [dns] trust_anchor.
named_start() {
    bash "$HERE/signed_zones.sh" "$WORK/named" "$DNS_PORT" "$DOMAINS" >"$WORK/named-setup.log" 2>&1 \
        || die "signing the bench zones failed: $(tail -3 "$WORK/named-setup.log")"
    named -g -c "$WORK/named/named.conf" >"$WORK/named.log" 2>&1 &
    DNS_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q 'running' "$WORK/named.log" 2>/dev/null && break
        kill -0 "$DNS_PID" 2>/dev/null || die "named did not start: $(tail -3 "$WORK/named.log")"
        sleep 0.2
    done
    grep -q 'running' "$WORK/named.log" || die "named did not load its zones: $(tail -3 "$WORK/named.log")"
}
sink_start() {
    wait_port_free "$SINK_PORT" 10 || die "port $SINK_PORT still busy"
    smtp-sink -u postfix -m 1024 "127.0.0.1:$SINK_PORT" 1024 >>"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT" 10 || die "smtp-sink did not listen on $SINK_PORT: $(tail -3 "$WORK/sink.log")"
}
sink_stop() { stop_pid "$SINK_PID" sink 5; wait "$SINK_PID" 2>/dev/null; SINK_PID=; }
tarpit_start() { # a listener that accepts and never greets: relayq's delivery waits, nothing fails
    wait_port_free "$SINK_PORT" 10 || die "port $SINK_PORT still busy"
    "$PY" "$HERE/timed_sink.py" tarpit --port "$SINK_PORT" --max-seconds $((FILL_TIMEOUT + 120)) >"$WORK/tarpit.log" 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT" 10 || die "tarpit did not listen"
}
tsink_start() { # $1 = arrivals file
    wait_port_free "$TSINK_PORT" 10 || die "port $TSINK_PORT still busy"
    "$PY" "$HERE/timed_sink.py" serve --port "$TSINK_PORT" --out "$1" --max-seconds $((LAT_DURATION + 300)) >>"$WORK/tsink.log" 2>&1 &
    TSINK_PID=$!
    wait_port "$TSINK_PORT" 10 || die "timed sink did not listen"
}
tsink_stop() { stop_pid "$TSINK_PID" timed-sink 10; wait "$TSINK_PID" 2>/dev/null; TSINK_PID=; }

pf_start_held() { # relayhost port: pf_start, plus the hold check the drain case switches on
    pf_start delivery "$1" "# No arrival throttling: with mail on hold qmgr hands out no flow tokens.
in_flow_delay = 0
header_checks ="
    printf '/^Subject:/ HOLD bench fill\n/^From:/ HOLD bench fill\n' >"$PF_DIR/etc/hold.regexp"
}
pf_set() { postconf -c "$PF_DIR/etc" -e "$@" && postfix -c "$PF_DIR/etc" reload >/dev/null 2>&1; sleep 1; }
pf_hold_count() { find "$PF_DIR/queue/hold" -type f 2>/dev/null | wc -l; }

rq_seq=0
RQ_DIR= RQ_LOG=
rq_config() { # spool-dir delivery-port
    RQ_DIR=$1
    mkdir -p "$RQ_DIR"
    cat >"$RQ_DIR/relayq.toml" <<EOF
hostname = "bench.localdomain"
[spool]
path = "$RQ_DIR/spool"
[[listener]]
address = "127.0.0.1:$RQ_PORT"
[smtp]
max_connections = 2000
[delivery]
# MX of every dN.test is mx.bench.test = 127.0.0.1 (dnsmasq below); the sink listens here.
port = $2
ip_version = "ipv4"
# The fill gate (a listener that never greets) must not time out during the fill.
greeting_timeout = "30m"
[retry]
initial = "2s"
max = "2s"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
EOF
    if [[ $DNSSEC == 1 ]]; then
        echo "trust_anchor = \"$WORK/named/trust-anchor\"" >>"$RQ_DIR/relayq.toml"
    fi
    if [[ $DANE == 1 ]]; then
        # [delivery] is closed above; a second table header would be refused.
        sed -i 's/^\[delivery\]$/[delivery]\ndane = true/' "$RQ_DIR/relayq.toml"
    fi
    if [[ $RULES == 1 ]]; then
        # Rules that match none of the bench's mail: the cost of looking.
        cat >>"$RQ_DIR/relayq.toml" <<EOF
[[destination]]
name = "partner"
match = ["partner.example", "*.partner.example"]
rate = "10/s"
[[destination]]
name = "provider"
match = ["mx:*.provider.example"]
concurrency = 10
suspend_on = ["4.7.28"]
EOF
    fi
    if [[ $WEBHOOK == 1 ]]; then
        echo "bench-webhook-secret" >"$RQ_DIR/webhook.secret"
        cat >>"$RQ_DIR/relayq.toml" <<EOF
[[webhook]]
name = "bench"
url = "http://127.0.0.1:$WEBHOOK_PORT/events"
secret_file = "$RQ_DIR/webhook.secret"
events = ["delivered", "bounced"]
EOF
        if [[ -z $HOOK_PID ]]; then
            "$PY" "$HERE/webhook_sink.py" --port "$WEBHOOK_PORT" --report "$WORK/webhook-sink.json" >"$WORK/webhook-sink.log" 2>&1 &
            HOOK_PID=$!
            wait_port "$WEBHOOK_PORT" 10 || die "webhook sink did not listen on $WEBHOOK_PORT"
        fi
    fi
}
rq_start() { # starts relayq on $RQ_DIR; appends to $RQ_DIR/relayq-N.log
    rq_seq=$((rq_seq + 1))
    RQ_LOG=$RQ_DIR/relayq-$rq_seq.log
    : >"$RQ_LOG"
    wait_port_free "$RQ_PORT" 15 || die "port $RQ_PORT still busy"
    "$RELAYQ_BIN" serve --config "$RQ_DIR/relayq.toml" >"$RQ_LOG" 2>&1 &
    RQ_PID=$!
    wait_port "$RQ_PORT" 60 || { problem "relayq did not listen: $(tail -3 "$RQ_LOG" | tr '\n' '|')"; stop_pid "$RQ_PID" relayq 5; RQ_PID=; return 1; }
    if [[ -n ${PERF_DIR:-} ]]; then
        mkdir -p "$PERF_DIR"
        perf record -q -F 999 -p "$RQ_PID" -o "$PERF_DIR/relayq-$rq_seq.data" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
}
# rq_stop LABEL: SIGTERM, check the exit and the log; sets RQ_QUEUED.
rq_stop() {
    local label=$1 st rc bad
    RQ_QUEUED=
    [[ -n $RQ_PID ]] || return 0
    if [[ -n ${PERF_PID:-} ]]; then
        kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; PERF_PID=
    fi
    if kill -0 "$RQ_PID" 2>/dev/null; then
        stop_pid "$RQ_PID" relayq 30; st=$?
        wait "$RQ_PID" 2>/dev/null; rc=$?
        ((st == 0)) || problem "relayq [$label]: did not exit within 30s of SIGTERM (killed)"
        ((rc == 0)) || problem "relayq [$label]: exit status $rc after SIGTERM"
    else
        wait "$RQ_PID" 2>/dev/null; rc=$?
        problem "relayq [$label]: died (exit status $rc); log tail: $(tail -5 "$RQ_LOG" | tr '\n' '|')"
    fi
    RQ_PID=
    bad=$(grep -aciE 'panic|\bERROR\b|\bWARN' "$RQ_LOG")
    if ((bad > 0)); then
        problem "relayq [$label]: $bad ERROR/WARN/panic log lines; first ones:"
        grep -aiE 'panic|\bERROR\b|\bWARN' "$RQ_LOG" | head -5 | cut -c1-300 | sed 's/^/    /' >>"$PROBLEMS"
    fi
    local deferred bounced
    deferred=$(grep -ac 'status=deferred' "$RQ_LOG")
    bounced=$(grep -acE 'status=(bounced|expired)' "$RQ_LOG")
    ((deferred > 0)) && {
        problem "relayq [$label]: $deferred deferrals (first: $(grep -a 'status=deferred' "$RQ_LOG" | head -1 | cut -c1-250))"
    }
    ((bounced > 0)) && problem "relayq [$label]: $bounced bounced/expired: $(grep -aE 'status=(bounced|expired)' "$RQ_LOG" | head -1 | cut -c1-250)"
    RQ_QUEUED=$(grep -aoE '[0-9]+ messages stay queued' "$RQ_LOG" | tail -1 | cut -d' ' -f1)
}
rq_cpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo NA; }  # utime+stime, all threads

# fill PORT TOTAL TAG: SESSIONS concurrent smtp-source processes, one per
# domain at a time (-s 1 -d: one session reusing its connection), TOTAL/DOMAINS
# messages to r@dK.test each. Sets FILL_SECS, FILL_RC, FILL_CLIENT_TICKS.
fill() {
    local port=$1 total=$2 tag=$3 per=$(($2 / DOMAINS)) t0 t1 c0
    child_ticks; c0=$CHILD_TICKS
    t0=$(now)
    seq 1 "$DOMAINS" | run_bg timeout -s TERM "$FILL_TIMEOUT" xargs -P "$SESSIONS" -I{} \
        smtp-source -d -s 1 -m "$per" -l "$SIZE" -f "$SENDER" -t "r@d{}.test" "127.0.0.1:$port" \
        >"$WORK/fill-$tag.out" 2>"$WORK/fill-$tag.err"
    FILL_RC=$?
    t1=$(now)
    child_ticks; FILL_CLIENT_TICKS=$((CHILD_TICKS - c0))
    FILL_SECS=$(fsub "$t1" "$t0")
    ((FILL_RC == 0)) || problem "fill $tag: smtp-source/xargs exit $FILL_RC after ${FILL_SECS}s: $(grep -v '^$' "$WORK/fill-$tag.err" | sort | uniq -c | sort -rn | head -3 | tr '\n' '|')"
}

row() { printf '%s\n' "$*" >>"$RES"; }

# ------------------------------------------------------------------- metadata
{
    echo "date: $(date -Iseconds)"
    echo "host: $(uname -srm); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')); $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "disk: $(df -hT "$WORK" | awk 'NR==2{print $1, $2}') (Postfix queue and relayq spool both in $WORK)"
    echo "postfix: $(postconf -d mail_version 2>/dev/null | cut -d' ' -f3); dnsmasq: $(dnsmasq --version | head -1 | awk '{print $3}'); $("$PY" --version 2>&1)"
    echo "relayq [[destination]] rules that do not bind: $([[ $RULES == 1 ]] && echo yes || echo no)"
    echo "relayq [[webhook]] (delivered, bounced) to a local receiver: $([[ $WEBHOOK == 1 ]] && echo yes || echo no)"
    echo "DNS: $([[ $DNSSEC == 1 ]] && echo "named $(named -v | awk '{print $2}'), signed root, insecure dN.test" || echo dnsmasq); relayq delivery.dane: $([[ $DANE == 1 ]] && echo true || echo false)"
    echo "settings: DRAIN_MESSAGES=$DRAIN_MESSAGES E2E_MESSAGES=$E2E_MESSAGES DOMAINS=$DOMAINS SIZE=$SIZE SESSIONS=$SESSIONS LAT_RATE=$LAT_RATE LAT_DURATION=$LAT_DURATION LAT_MODE=$LAT_MODE CASES='$CASES' SYSTEMS='$SYSTEMS'"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); clk_tck $HZ"
} >"$WORK/meta.txt"

if sys_on relayq; then
    if [[ $BUILD == 1 ]]; then
        log "cargo build --release"
        (cd "$ROOT" && timeout 1800 cargo build --release -q 2>"$WORK/build.log") || die "cargo build failed: $(tail -5 "$WORK/build.log")"
    fi
    [[ -x $RELAYQ_BIN ]] || die "no relayq binary at $RELAYQ_BIN"
    echo "relayq: $("$RELAYQ_BIN" --version 2>/dev/null | head -1) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src spool Cargo.toml 2>/dev/null || echo '+local changes'))" >>"$WORK/meta.txt"
fi

dns_start
log "work dir $WORK; $([[ $DNSSEC == 1 ]] && echo "named (signed root, insecure delegations)" || echo dnsmasq) on 127.0.0.1:$DNS_PORT with MX for d1..d$DOMAINS.test"

# Results, as key=value per system and case (formatted at the end).
declare -A R

# ================================================================ 1. drain
drain_relayq() {
    local n=$DRAIN_MESSAGES dir=$WORK/rq-drain
    log "drain/relayq: fill $n msgs with delivery gated (listener on :$SINK_PORT that never greets)"
    rq_config "$dir" "$SINK_PORT"
    tarpit_start
    rq_start || return 1
    quiet_wait
    local c0 c1 t_start t_first t_done cnt st
    c0=$(rq_cpu "$RQ_PID")
    fill "$RQ_PORT" "$n" rq-drain
    c1=$(rq_cpu "$RQ_PID")
    R[rq_drain_fill_s]=$FILL_SECS
    R[rq_drain_fill_cpu]=$((c1 - c0))
    local sent_during_fill
    sent_during_fill=$(grep -ac 'status=sent' "$RQ_LOG")
    rq_stop "drain fill"
    R[rq_drain_queued]=${RQ_QUEUED:-?}
    [[ ${RQ_QUEUED:-} == "$n" ]] || problem "relayq drain: $n sent by smtp-source, ${RQ_QUEUED:-?} queued at shutdown ($sent_during_fill delivered during fill)"
    sink_stop
    sink_start
    log "drain/relayq: restart with the sink up; timing until ${RQ_QUEUED:-$n} removed"
    quiet_wait
    mark0
    local off=0 want=${RQ_QUEUED:-$n}
    t_start=$(now)
    rq_start || return 1
    read -r cnt t_first t_done st < <(follow "$RQ_LOG" ': removed( queue_id=|$)' "$want" 0 "$DRAIN_TIMEOUT" "$STALL" "$RQ_PID")
    c1=$(rq_cpu "$RQ_PID")
    R[rq_drain_ours]=$c1
    R[rq_drain_other]=$(other_pct "$c1")
    R[rq_drain_n]=$cnt
    R[rq_drain_status]=$st
    R[rq_drain_s]=$(fsub "$t_done" "$t_start")
    R[rq_drain_first_s]=$( [[ $t_first != 0.000 ]] && fsub "$t_first" "$t_start" || echo NA)
    R[rq_drain_cpu]=$c1
    ((cnt >= want)) || problem "relayq drain: only $cnt of $want removed ($st) after $(fsub "$t_done" "$t_start")s; sent=$(grep -ac 'status=sent' "$RQ_LOG") deferred=$(grep -ac 'status=deferred' "$RQ_LOG")"
    R[rq_drain_rebuild]=$(grep -aoE 'spool .*: [0-9]+ messages queued' "$RQ_LOG" | head -1 | grep -oE '[0-9]+ messages queued')
    rq_stop "drain"
    [[ ${RQ_QUEUED:-} == 0 ]] || problem "relayq drain: ${RQ_QUEUED:-?} messages still queued at the end"
    cp "$RQ_DIR"/relayq-*.log "$WORK/" 2>/dev/null
    rm -rf "$dir/spool"
}

drain_postfix() {
    local n=$DRAIN_MESSAGES
    log "drain/postfix: fill $n msgs into the hold queue (header_checks HOLD)"
    pf_set "header_checks = regexp:$PF_DIR/etc/hold.regexp"
    quiet_wait
    cpu_total "$PF_MASTER" "$WORK/pf-fill.0"
    fill "$PF_PORT" "$n" pf-drain
    local i h
    for ((i = 0; i < 600; i++)); do
        h=$(pf_hold_count)
        ((h >= n)) && break
        [[ -z $(find "$PF_DIR/queue/incoming" -type f -print -quit) ]] && ((i > 4)) && break
        sleep 0.5
    done
    cpu_total "$PF_MASTER" "$WORK/pf-fill.1"
    R[pf_drain_fill_s]=$FILL_SECS
    R[pf_drain_fill_cpu]=$(cpu_diff "$WORK/pf-fill.0" "$WORK/pf-fill.1" | awk '{print $1}')
    R[pf_drain_queued]=$h
    ((h == n)) || problem "postfix drain: $n sent, $h in the hold queue"
    pf_set "header_checks ="
    quiet_wait
    log "drain/postfix: postsuper -H ALL; postqueue -f; timing until $h removed"
    local off c0 t_start cnt t_first t_done st
    off=$(fsize "$PF_DIR/maillog")
    mark0
    child_ticks; c0=$CHILD_TICKS
    cpu_total "$PF_MASTER" "$WORK/pf-drain.0"
    t_start=$(now)
    postsuper -c "$PF_DIR/etc" -H ALL >"$WORK/postsuper.log" 2>&1
    postqueue -c "$PF_DIR/etc" -f >>"$WORK/postsuper.log" 2>&1
    read -r cnt t_first t_done st < <(follow "$PF_DIR/maillog" ': removed( queue_id=|$)' "$h" "$off" "$DRAIN_TIMEOUT" "$STALL" "$PF_MASTER")
    cpu_total "$PF_MASTER" "$WORK/pf-drain.1"
    child_ticks
    local tool=$((CHILD_TICKS - c0)) tree
    tree=$(cpu_diff "$WORK/pf-drain.0" "$WORK/pf-drain.1")
    R[pf_drain_n]=$cnt
    R[pf_drain_status]=$st
    R[pf_drain_s]=$(fsub "$t_done" "$t_start")
    R[pf_drain_first_s]=$( [[ $t_first != 0.000 ]] && fsub "$t_first" "$t_start" || echo NA)
    R[pf_drain_cpu]=$(($(awk '{print $1}' <<<"$tree") + tool))
    R[pf_drain_by]="$(cut -s -d' ' -f2- <<<"$tree") postsuper+postqueue+follow=$tool"
    R[pf_drain_other]=$(other_pct "${R[pf_drain_cpu]}")
    ((cnt >= h)) || problem "postfix drain: only $cnt of $h removed ($st); queue files left: $(pf_queue_count)"
    grep -aE 'status=(deferred|bounced)' "$PF_DIR/maillog" | head -2 | cut -c1-250 | sed 's/^/postfix: /' >>"$PROBLEMS"
}

# ============================================================ 2. end to end
e2e_relayq() {
    local n=$E2E_MESSAGES dir=$WORK/rq-e2e
    log "e2e/relayq: $n msgs, $SESSIONS sessions, sink up; timing until all removed"
    rq_config "$dir" "$SINK_PORT"
    rq_start || return 1
    quiet_wait
    mark0
    local c0 c1 t_start cnt t_first t_done st
    c0=$(rq_cpu "$RQ_PID")
    t_start=$(now)
    # the follower runs in the background while smtp-source fills
    "$PY" "$WORK/follow.py" "$RQ_LOG" ': removed( queue_id=|$)' "$n" 0 "$((FILL_TIMEOUT + DRAIN_TIMEOUT))" "$((FILL_TIMEOUT))" "$RQ_PID" >"$WORK/e2e-rq.follow" &
    local fpid=$!
    fill "$RQ_PORT" "$n" rq-e2e
    CUR_PID=$fpid; wait "$fpid"; CUR_PID=
    read -r cnt t_first t_done st <"$WORK/e2e-rq.follow"
    c1=$(rq_cpu "$RQ_PID")
    R[rq_e2e_n]=$cnt; R[rq_e2e_status]=$st
    R[rq_e2e_fill_s]=$FILL_SECS
    R[rq_e2e_s]=$(fsub "$t_done" "$t_start")
    R[rq_e2e_cpu]=$((c1 - c0))
    R[rq_e2e_other]=$(other_pct "$((c1 - c0 + FILL_CLIENT_TICKS))")
    ((cnt >= n)) || problem "relayq e2e: only $cnt of $n removed ($st)"
    rq_stop "e2e"
    cp "$RQ_LOG" "$WORK/rq-e2e.log"
    rm -rf "$dir/spool"
}

e2e_postfix() {
    local n=$E2E_MESSAGES
    log "e2e/postfix: $n msgs, $SESSIONS sessions; timing until all removed"
    quiet_wait
    mark0
    local off t_start cnt t_first t_done st fpid
    off=$(fsize "$PF_DIR/maillog")
    cpu_total "$PF_MASTER" "$WORK/pf-e2e.0"
    t_start=$(now)
    "$PY" "$WORK/follow.py" "$PF_DIR/maillog" ': removed( queue_id=|$)' "$n" "$off" "$((FILL_TIMEOUT + DRAIN_TIMEOUT))" "$FILL_TIMEOUT" "$PF_MASTER" >"$WORK/e2e-pf.follow" &
    fpid=$!
    fill "$PF_PORT" "$n" pf-e2e
    CUR_PID=$fpid; wait "$fpid"; CUR_PID=
    read -r cnt t_first t_done st <"$WORK/e2e-pf.follow"
    cpu_total "$PF_MASTER" "$WORK/pf-e2e.1"
    local tree
    tree=$(cpu_diff "$WORK/pf-e2e.0" "$WORK/pf-e2e.1")
    R[pf_e2e_n]=$cnt; R[pf_e2e_status]=$st
    R[pf_e2e_fill_s]=$FILL_SECS
    R[pf_e2e_s]=$(fsub "$t_done" "$t_start")
    R[pf_e2e_cpu]=$(awk '{print $1}' <<<"$tree")
    R[pf_e2e_by]=$(cut -s -d' ' -f2- <<<"$tree")
    R[pf_e2e_other]=$(other_pct "$((R[pf_e2e_cpu] + FILL_CLIENT_TICKS))")
    ((cnt >= n)) || problem "postfix e2e: only $cnt of $n removed ($st)"
}

# ============================================================== 3. latency
# latency SYSTEM PORT: open-loop LAT_RATE msg/s for LAT_DURATION s, recipients
# over the DOMAINS, delivered to timed_sink.py; delay = arrival at the sink -
# final dot written by the client.
latency_case() {
    local sys=$1 port=$2 arr=$WORK/lat-$1.arrivals sent=$WORK/lat-$1.sent
    : >"$arr"
    tsink_start "$arr"
    quiet_wait
    log "latency/$sys: $LAT_RATE msg/s for ${LAT_DURATION}s ($LAT_MODE connections), delivered to timed_sink :$TSINK_PORT"
    run_bg timeout $((LAT_DURATION + 120)) "$PY" "$HERE/latency.py" --port "$port" --rate "$LAT_RATE" \
        --duration "$LAT_DURATION" --size "$SIZE" --mode "$LAT_MODE" --pool "$SESSIONS" --domains "$DOMAINS" \
        --sent-log "$sent" --label "$sys" --json >"$WORK/lat-$sys.json" 2>"$WORK/lat-$sys.err"
    local ok i have
    ok=$(wc -l <"$sent" 2>/dev/null || echo 0)
    # wait (bounded) until the sink has everything that was acknowledged
    for ((i = 0; i < 600; i++)); do
        have=$(wc -l <"$arr")
        ((have >= ok)) && break
        sleep 0.1
    done
    sleep 1.2 # one more flush period
    tsink_stop
    R[${sys}_lat]=$("$PY" "$HERE/timed_sink.py" report --sent "$sent" --arrivals "$arr")
    R[${sys}_lat_ack]=$("$PY" - "$WORK/lat-$sys.json" <<'PYEOF' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
a, t, l = r["ack_ms"], r["txn_ms"], r["lag_ms"]
print("ok=%d non2xx=%d errors=%d skipped=%d achieved=%.0f/s; ack p50=%.1f p99=%.1f ms; txn p50=%.1f p99=%.1f ms; generator lag p99=%.1f ms%s" % (
    r["ok"], r["non2xx"], r["errors"], r["skipped"], r["achieved_rate"], a["p50"], a["p99"], t["p50"], t["p99"], l["p99"],
    (" " + str(r["errors_by"])) if r["errors"] else ""))
PYEOF
)
    log "  $sys: ${R[${sys}_lat]}"
}

latency_relayq() {
    local dir=$WORK/rq-lat
    rq_config "$dir" "$TSINK_PORT"
    rq_start || return 1
    latency_case relayq "$RQ_PORT"
    rq_stop "latency"
    [[ ${RQ_QUEUED:-} == 0 ]] || problem "relayq latency: ${RQ_QUEUED:-?} messages still queued at the end"
    cp "$RQ_LOG" "$WORK/rq-lat.log"
    rm -rf "$dir/spool"
}
latency_postfix() {
    pf_set "relayhost = [127.0.0.1]:$TSINK_PORT"
    latency_case postfix "$PF_PORT"
    pf_set "relayhost = [127.0.0.1]:$SINK_PORT"
}

# ============================================================== 4. throttle
# A remote that serves THROTTLE_SESSIONS sessions and answers 421 beyond them
# (throttle_sink.py); THROTTLE_MESSAGES to one domain, queued while delivery
# is gated, then drained: time, msg/s, refused connections per delivered
# message. Shows the concurrency feedback of each system.
thr_start() { # stats-file
    wait_port_free "$THROTTLE_PORT" 10 || die "port $THROTTLE_PORT still busy"
    "$PY" "$HERE/throttle_sink.py" --port "$THROTTLE_PORT" --sessions "$THROTTLE_SESSIONS" --stats "$1" \
        --max-seconds $((DRAIN_TIMEOUT + 120)) >>"$WORK/throttle-sink.log" 2>&1 &
    THR_PID=$!
    wait_port "$THROTTLE_PORT" 10 || die "throttle sink did not listen"
}
thr_stop() { stop_pid "$THR_PID" throttle-sink 10; wait "$THR_PID" 2>/dev/null; THR_PID=; }
thr_stat() { grep -oE "$1=[0-9.]+" "$2" | cut -d= -f2; }
fill_one() { # port total tag: SESSIONS sessions, all to r@d1.test
    local t0 t1
    t0=$(now)
    run_bg timeout -s TERM "$FILL_TIMEOUT" smtp-source -d -s "$SESSIONS" -m "$2" -l "$SIZE" -f "$SENDER" -t r@d1.test \
        "127.0.0.1:$1" >"$WORK/fill-$3.out" 2>"$WORK/fill-$3.err"
    FILL_RC=$?
    t1=$(now)
    FILL_SECS=$(fsub "$t1" "$t0")
    ((FILL_RC == 0)) || problem "fill $3: smtp-source exit $FILL_RC: $(head -3 "$WORK/fill-$3.err" | tr '\n' '|')"
}
thr_record() { # prefix stats-file count t_start t_done status
    R[${1}_thr_n]=$3
    R[${1}_thr_status]=$6
    R[${1}_thr_s]=$(fsub "$5" "$4")
    R[${1}_thr_delivered]=$(thr_stat delivered "$2")
    R[${1}_thr_refused]=$(thr_stat refused "$2")
    R[${1}_thr_sessions]=$(thr_stat sessions "$2")
    R[${1}_thr_max_open]=$(thr_stat max_open "$2")
}
throttle_relayq() {
    local n=$THROTTLE_MESSAGES dir=$WORK/rq-thr stats=$WORK/thr-rq.stats keep_sink=$SINK_PORT keep_pid=$SINK_PID
    log "throttle/relayq: fill $n msgs to one domain with delivery gated, then drain into a sink of $THROTTLE_SESSIONS sessions"
    rq_config "$dir" "$THROTTLE_PORT"
    SINK_PORT=$THROTTLE_PORT
    tarpit_start
    SINK_PORT=$keep_sink
    local tarpit=$SINK_PID
    SINK_PID=$keep_pid
    rq_start || return 1
    fill_one "$RQ_PORT" "$n" rq-thr
    rq_stop "throttle fill"
    [[ ${RQ_QUEUED:-} == "$n" ]] || problem "relayq throttle: $n sent, ${RQ_QUEUED:-?} queued at shutdown"
    stop_pid "$tarpit" tarpit 5; wait "$tarpit" 2>/dev/null
    thr_start "$stats"
    quiet_wait
    local want=${RQ_QUEUED:-$n} t_start cnt t_first t_done st
    t_start=$(now)
    rq_start || return 1
    read -r cnt t_first t_done st < <(follow "$RQ_LOG" ': removed( queue_id=|$)' "$want" 0 "$DRAIN_TIMEOUT" "$STALL" "$RQ_PID")
    R[rq_thr_cpu]=$(rq_cpu "$RQ_PID")
    sleep 1.2
    thr_stop
    thr_record rq "$stats" "$cnt" "$t_start" "$t_done" "$st"
    R[rq_thr_lowered]=$(grep -ac 'connection limit lowered' "$RQ_LOG")
    R[rq_thr_deferred]=$(grep -ac 'status=deferred' "$RQ_LOG")
    ((cnt >= want)) || problem "relayq throttle: only $cnt of $want removed ($st)"
    # The 421s are the point here; only other trouble is a problem.
    grep -aE 'panic|\bERROR\b' "$RQ_LOG" | head -3 | cut -c1-250 | sed 's/^/relayq throttle: /' >>"$PROBLEMS"
    stop_pid "$RQ_PID" relayq 30; wait "$RQ_PID" 2>/dev/null; RQ_PID=
    cp "$RQ_LOG" "$WORK/rq-thr.log"
    rm -rf "$dir/spool"
}
throttle_postfix() {
    local n=$THROTTLE_MESSAGES stats=$WORK/thr-pf.stats
    log "throttle/postfix: fill $n msgs into the hold queue, then drain into a sink of $THROTTLE_SESSIONS sessions"
    # Retry timing like relayq's bench config (2 s); concurrency feedback as shipped.
    pf_set "relayhost = [127.0.0.1]:$THROTTLE_PORT" "minimal_backoff_time = 2s" "maximal_backoff_time = 2s" \
        "queue_run_delay = 2s" "header_checks = regexp:$PF_DIR/etc/hold.regexp"
    fill_one "$PF_PORT" "$n" pf-thr
    local i h
    for ((i = 0; i < 600; i++)); do
        h=$(pf_hold_count)
        ((h >= n)) && break
        sleep 0.5
    done
    pf_set "header_checks ="
    thr_start "$stats"
    quiet_wait
    local off t_start cnt t_first t_done st
    off=$(fsize "$PF_DIR/maillog")
    cpu_total "$PF_MASTER" "$WORK/pf-thr.0"
    t_start=$(now)
    postsuper -c "$PF_DIR/etc" -H ALL >>"$WORK/postsuper.log" 2>&1
    postqueue -c "$PF_DIR/etc" -f >>"$WORK/postsuper.log" 2>&1
    read -r cnt t_first t_done st < <(follow "$PF_DIR/maillog" ': removed( queue_id=|$)' "$h" "$off" "$DRAIN_TIMEOUT" "$STALL" "$PF_MASTER")
    cpu_total "$PF_MASTER" "$WORK/pf-thr.1"
    R[pf_thr_cpu]=$(cpu_diff "$WORK/pf-thr.0" "$WORK/pf-thr.1" | awk '{print $1}')
    sleep 1.2
    thr_stop
    thr_record pf "$stats" "$cnt" "$t_start" "$t_done" "$st"
    R[pf_thr_deferred]=$(tail -c +"$((off + 1))" "$PF_DIR/maillog" | grep -ac 'status=deferred')
    ((cnt >= h)) || problem "postfix throttle: only $cnt of $h removed ($st)"
    pf_set "relayhost = [127.0.0.1]:$SINK_PORT" "minimal_backoff_time = 300s" "maximal_backoff_time = 4000s" "queue_run_delay = 300s"
}

# ---------------------------------------------------------------------- run
if case_on drain; then
    sys_on relayq && drain_relayq
    [[ -z $SINK_PID ]] && sink_start
    if sys_on postfix; then pf_start_held "$SINK_PORT"; drain_postfix; fi
fi
[[ -z $SINK_PID ]] && sink_start
if case_on e2e; then
    sys_on relayq && e2e_relayq
    if sys_on postfix; then [[ -n $PF_DIR ]] || pf_start_held "$SINK_PORT"; e2e_postfix; fi
fi
if case_on latency; then
    sys_on relayq && latency_relayq
    if sys_on postfix; then [[ -n $PF_DIR ]] || pf_start_held "$SINK_PORT"; latency_postfix; fi
fi
if case_on throttle; then
    sys_on relayq && throttle_relayq
    if sys_on postfix; then [[ -n $PF_DIR ]] || pf_start_held "$SINK_PORT"; throttle_postfix; fi
fi
if [[ -n $PF_DIR ]]; then
    w=$(grep -acE 'warning|fatal|panic' "$PF_DIR/maillog")
    ((w > 0)) && { echo "postfix: $w warning/fatal lines in its maillog; first:" >>"$PROBLEMS"; grep -aE 'warning|fatal|panic' "$PF_DIR/maillog" | head -3 | cut -c1-250 | sed 's/^/    /' >>"$PROBLEMS"; }
    cp "$PF_DIR/maillog" "$WORK/postfix-maillog" 2>/dev/null
fi

# ------------------------------------------------------------------- report
g() { echo "${R[$1]:-NA}"; }
ms_per() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN{ if (t ~ /^[0-9]+$/ && n > 0) printf "%.3f", 1000*t/hz/n; else printf "NA" }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN{ if (s+0 > 0) printf "%.0f", n/s; else printf "NA" }'; }
addt() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print a+b; else print "NA" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.1fx", a/b; else printf "NA" }'; }
OUT=$WORK/report.txt
{
    echo "relayq delivery benchmark"
    cat "$WORK/meta.txt"
    echo
    if case_on drain; then
        echo "1. Drain: a queue of $DRAIN_MESSAGES x ${SIZE} B messages over $DOMAINS domains, delivery gated during the fill"
        echo "   relayq: filled while its MX (127.0.0.1:$SINK_PORT) accepts TCP but never greets (nothing fails, nothing delivered),"
        echo "           SIGTERM, sink started, relayq restarted: drain = exec -> last '<id>: removed' (includes spool rebuild)"
        echo "   postfix: filled into the hold queue (header_checks HOLD); drain = postsuper -H ALL + postqueue -f -> last 'removed'"
        printf '   %-8s %9s %8s %8s %9s %9s %8s %10s %10s %7s %s\n' system msgs fill_s fill/s drain_s "drain/s" first_s "cpu ms/msg" "(+fill)" other% status
        local_row() { # sys prefix
            local p=$2 n q
            n=$(g "${p}_drain_n"); q=$(g "${p}_drain_queued")
            printf '   %-8s %9s %8s %8s %9s %9s %8s %10s %10s %7s %s\n' "$1" "$n" "$(g "${p}_drain_fill_s")" \
                "$(rate "$q" "$(g "${p}_drain_fill_s")")" "$(g "${p}_drain_s")" "$(rate "$n" "$(g "${p}_drain_s")")" \
                "$(g "${p}_drain_first_s")" "$(ms_per "$(g "${p}_drain_cpu")" "$n")" \
                "$(ms_per "$(addt "$(g "${p}_drain_cpu")" "$(g "${p}_drain_fill_cpu")")" "$n")" \
                "$(g "${p}_drain_other")" "$(g "${p}_drain_status")"
        }
        sys_on relayq && local_row relayq rq
        sys_on postfix && local_row postfix pf
        echo "   drain msg/s relayq/postfix: $(ratio "$(rate "$(g rq_drain_n)" "$(g rq_drain_s)")" "$(rate "$(g pf_drain_n)" "$(g pf_drain_s)")") (target >= 5x)"
        sys_on postfix && echo "   postfix CPU by process (drain): $(g pf_drain_by)"
        sys_on relayq && echo "   relayq restart log: $(g rq_drain_rebuild)"
        echo "   concurrency: relayq groups by recipient domain -> $DOMAINS destinations x destination_concurrency 20, bounded by the"
        echo "   high lane's 64 workers; Postfix groups by nexthop: relayhost [127.0.0.1]:port is ONE destination for all $DOMAINS"
        echo "   domains -> default_destination_concurrency_limit = 20 parallel smtp clients (connection cache on)."
        echo
    fi
    if case_on e2e; then
        echo "2. End to end: $E2E_MESSAGES x ${SIZE} B, $SESSIONS concurrent smtp-source sessions (one per domain at a time, -d), sink up;"
        echo "   time = first connection -> last 'removed' (accepted AND delivered)"
        printf '   %-8s %9s %8s %9s %9s %10s %7s %s\n' system msgs fill_s total_s "msg/s" "cpu ms/msg" other% status
        for s in relayq postfix; do
            sys_on $s || continue
            p=$([[ $s == relayq ]] && echo rq || echo pf)
            printf '   %-8s %9s %8s %9s %9s %10s %7s %s\n' "$s" "$(g ${p}_e2e_n)" "$(g ${p}_e2e_fill_s)" "$(g ${p}_e2e_s)" \
                "$(rate "$(g ${p}_e2e_n)" "$(g ${p}_e2e_s)")" "$(ms_per "$(g ${p}_e2e_cpu)" "$(g ${p}_e2e_n)")" "$(g ${p}_e2e_other)" "$(g ${p}_e2e_status)"
        done
        echo "   e2e msg/s relayq/postfix: $(ratio "$(rate "$(g rq_e2e_n)" "$(g rq_e2e_s)")" "$(rate "$(g pf_e2e_n)" "$(g pf_e2e_s)")")"
        sys_on postfix && echo "   postfix CPU by process (e2e): $(g pf_e2e_by)"
        echo
    fi
    if case_on latency; then
        echo "3. Accepted -> delivered latency: open loop $LAT_RATE msg/s x ${LAT_DURATION}s, ${SIZE} B, latency.py --mode $LAT_MODE ($SESSIONS sessions in pool mode),"
        echo "   recipients over $DOMAINS domains; delay = arrival at timed_sink.py (final dot read) - client's final dot written"
        for s in relayq postfix; do
            sys_on $s || continue
            echo "   $(printf '%-8s' $s) $(g ${s}_lat)"
            echo "            client: $(g ${s}_lat_ack)"
        done
        echo "   target: relayq p99 < 50 ms"
        echo
    fi
    if case_on throttle; then
        echo "4. Throttling remote: $THROTTLE_MESSAGES x ${SIZE} B to one domain, queued with delivery gated, then drained into"
        echo "   throttle_sink.py, which serves $THROTTLE_SESSIONS sessions at once and greets more with 421 4.7.0 (then closes)"
        printf '   %-8s %9s %9s %9s %9s %11s %9s %9s %10s %s\n' system msgs drain_s "msg/s" refused "refused/msg" sessions max_open deferrals status
        for s in relayq postfix; do
            sys_on $s || continue
            p=$([[ $s == relayq ]] && echo rq || echo pf)
            printf '   %-8s %9s %9s %9s %9s %11s %9s %9s %10s %s\n' "$s" "$(g ${p}_thr_n)" "$(g ${p}_thr_s)" \
                "$(rate "$(g ${p}_thr_n)" "$(g ${p}_thr_s)")" "$(g ${p}_thr_refused)" \
                "$(awk -v r="$(g ${p}_thr_refused)" -v d="$(g ${p}_thr_delivered)" 'BEGIN{ if (d+0 > 0) printf "%.4f", r/d; else printf "NA" }')" \
                "$(g ${p}_thr_sessions)" "$(g ${p}_thr_max_open)" "$(g ${p}_thr_deferred)" "$(g ${p}_thr_status)"
        done
        sys_on relayq && echo "   relayq: $(g rq_thr_lowered) 'connection limit lowered' log lines; cpu ms/msg $(ms_per "$(g rq_thr_cpu)" "$(g rq_thr_n)") (drain)"
        sys_on postfix && echo "   postfix: backoff and queue_run_delay 2 s (like relayq's bench retry), concurrency feedback as shipped; cpu ms/msg $(ms_per "$(g pf_thr_cpu)" "$(g pf_thr_n)") (drain)"
        echo
    fi
    echo "CPU: relayq = utime+stime of its process (all threads, /proc/PID/stat); postfix = master + whole process tree incl."
    echo "reaped children (proc_cpu.py) + postsuper/postqueue; ${HZ} ticks/s. '(+fill)' adds the CPU of accepting the queue."
    echo "other% = CPU of other processes on the machine during the measured phase (shared machine: noisy when high)."
    echo "target: relayq <= 0.25 ms CPU per 2 KB message accepted and delivered (Postfix ~3 ms)."
    echo
    echo "Problems seen:"
    if [[ -s $PROBLEMS ]]; then sed 's/^/  /' "$PROBLEMS"; else echo "  none"; fi
} >"$OUT"
mkdir -p "$RESULTS_DIR"
RESULT_FILE=$RESULTS_DIR/delivery-$(date +%Y%m%d-%H%M%S)$([[ $QUICK == 1 ]] && echo -quick).txt
cp "$OUT" "$RESULT_FILE"
cat "$OUT"
log "results: $RESULT_FILE"
