# Shared by intake.sh and delivery.sh (sourced; defines functions only).
# They expect: WORK (temp dir), HZ (getconf CLK_TCK), IDLE_WAIT/IDLE_PCT,
# PF_PORT, and PF_DIR/PF_MASTER/CUR_PID as globals.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# install_packages PKG...: Debian packages the benchmark needs (none: no-op).
# Postfix is installed without a configuration, and a system instance the
# package started is stopped and disabled: each benchmark runs its own.
install_packages() {
    (($#)) || return 0
    [[ $EUID == 0 ]] || die "need $*; run as root or install them"
    log "installing $* (apt-get)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$@" >/dev/null \
        || die "apt-get install $* failed"
    if [[ " $* " == *" postfix "* ]]; then
        postfix status >/dev/null 2>&1 && postfix stop >/dev/null 2>&1
        command -v systemctl >/dev/null && { systemctl disable --now postfix >/dev/null 2>&1 || true; }
    fi
    return 0
}
port_busy() { ss -Hltun "sport = :$1" 2>/dev/null | grep -q .; }
wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do port_busy "$1" && return 0; sleep 0.1; done
    return 1
}
wait_port_free() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do port_busy "$1" || return 0; sleep 0.1; done
    return 1
}

stop_pid() { # pid name seconds: TERM, wait, KILL; returns 0 if it stopped on TERM
    local pid=$1 name=$2 secs=$3 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "$name (pid $pid) still running ${secs}s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    return 1
}

# Runs a command in the background and waits, so the EXIT trap can stop it.
run_bg() { "$@" & CUR_PID=$!; wait "$CUR_PID"; local rc=$?; CUR_PID=; return $rc; }

# Machine-wide CPU ticks from /proc/stat: "busy total".
stat_ticks() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; print b, t; exit}' /proc/stat; }
# CPU ticks of this shell's reaped children (bash 'times', second line), into
# CHILD_TICKS. Must not run in a subshell: call it directly, not in $(...).
child_ticks() {
    times >"$WORK/.times"
    CHILD_TICKS=$(awk -v hz="$HZ" 'NR==2{ s=0; for(i=1;i<=2;i++){ split($i,a,"m"); sub("s","",a[2]); s+=a[1]*60+a[2] } printf "%d", s*hz+0.5 }' "$WORK/.times")
}
busy_pct_1s() {
    local b0 t0 b1 t1
    read -r b0 t0 < <(stat_ticks); sleep 1; read -r b1 t1 < <(stat_ticks)
    awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN{ printf "%d", (t > 0 ? 100*b/t : 0) }'
}
# Waits (at most IDLE_WAIT s) for the machine to be under IDLE_PCT % busy.
quiet_wait() {
    ((IDLE_WAIT > 0)) || return 0
    local end=$((SECONDS + IDLE_WAIT)) pct
    while :; do
        pct=$(busy_pct_1s)
        ((pct < IDLE_PCT)) && return 0
        if ((SECONDS >= end)); then
            log "  machine still ${pct}% busy (other processes) after ${IDLE_WAIT}s; measuring anyway"
            return 0
        fi
    done
}

# pf_start TITLE RELAYHOST_PORT [EXTRA_MAIN_CF]: a private Postfix instance in
# $WORK/postfix listening on 127.0.0.1:PF_PORT, relaying everything to
# [127.0.0.1]:RELAYHOST_PORT without DNS. Sets PF_DIR and PF_MASTER.
pf_start() {
    PF_DIR=$WORK/postfix
    mkdir -p "$PF_DIR/etc" "$PF_DIR/queue" "$PF_DIR/data"
    chown postfix "$PF_DIR/data"
    cat >"$PF_DIR/etc/main.cf" <<EOF
# Postfix instance for the relayq $1 benchmark (generated; temporary).
compatibility_level = 3.6
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
local_transport = error:local delivery disabled
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# Every domain to the sink: one nexthop, [127.0.0.1]:port (no DNS at all).
relayhost = [127.0.0.1]:$2
smtp_dns_support_level = disabled
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = /tmp, /var
# Enough smtpd processes for 100 sessions plus headroom; keep them alive so
# per-process CPU accounting sees few exits (exits are counted anyway).
default_process_limit = 300
max_use = 1000000
max_idle = 3600
biff = no
${3:-}
EOF
    # Debian's master.cf without the port-25 listener and without chroot
    # (chroot would need copies of /etc files in the queue directory).
    {
        printf '127.0.0.1:%s\tinet\tn\t-\tn\t-\t-\tsmtpd\n' "$PF_PORT"
        awk 'BEGIN{OFS="\t"} /^#/ || /^[ \t]/ || /^$/ {next} $2=="inet"{next}
             $1 ~ /^(maildrop|uucp|ifmail|bsmtp|scalemail-backend|mailman)$/ {next}
             {$5="n"; print}' /etc/postfix/master.cf
    } >"$PF_DIR/etc/master.cf"
    postfix -c "$PF_DIR/etc" check >"$WORK/postfix-check.log" 2>&1 || die "postfix check: $(tail -3 "$WORK/postfix-check.log")"
    postfix -c "$PF_DIR/etc" start >"$WORK/postfix-start.log" 2>&1 || die "postfix start: $(tail -5 "$WORK/postfix-start.log"; tail -5 "$PF_DIR/maillog" 2>/dev/null)"
    PF_MASTER=$(tr -d ' ' <"$PF_DIR/queue/pid/master.pid")
    wait_port "$PF_PORT" 15 || die "Postfix did not listen on $PF_PORT"
    touch "$PF_DIR/maillog"
}

pf_stop() {
    [[ -n $PF_DIR ]] || return 0
    postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$PF_MASTER" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PF_MASTER" 2>/dev/null; then
        log "Postfix master $PF_MASTER did not stop: SIGKILL to it and its children"
        pkill -KILL -P "$PF_MASTER" 2>/dev/null; kill -KILL "$PF_MASTER" 2>/dev/null
    fi
    PF_DIR= PF_MASTER=
}

# Messages in the instance's queues.
pf_queue_count() {
    find "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" "$PF_DIR/queue/deferred" \
        "$PF_DIR/queue/maildrop" "$PF_DIR/queue/hold" -type f 2>/dev/null | wc -l
}
