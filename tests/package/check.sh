#!/usr/bin/env bash
# Checks the Debian package that debian/build-deb made (run by .ci/run after
# the tests; needs root for the install test and apt-get for lintian):
#
#   1. its control fields and contents (dpkg-deb -I / -c): the binary, the
#      sendmail and mailq links, the conffile, the unit, a man page for every
#      subcommand, the completions; the packaged config validates and the
#      completion scripts parse;
#   2. lintian: no error and no warning (overrides, each with its reason, in
#      debian/relayq.lintian-overrides);
#   3. install, use and remove, on this machine: dpkg -i, `relayq serve` as
#      the relayq user with the packaged config (plus a route to a closed
#      loopback port, so that nothing leaves the machine), a message through
#      /usr/sbin/sendmail seen in mailq, man relayq, then dpkg -r and
#      dpkg --purge leave nothing behind. Skipped, saying why, where it could
#      disturb the machine: not root, another MTA installed (the package
#      conflicts with mail-transport-agent), relayq already installed, port
#      25 in use, or RELAYQ_PACKAGE_INSTALL_TEST=0.
#
#   tests/package/check.sh [PATH.deb]    (default: the newest target/debian/relayq_*.deb)
set -euo pipefail
cd "$(dirname "$0")/../.."

target="${CARGO_TARGET_DIR:-target}"
deb="${1:-$(ls -t "$target"/debian/relayq_*.deb 2>/dev/null | head -n 1)}"
[[ -n "$deb" && -f "$deb" ]] || { echo "check.sh: no package; run debian/build-deb first" >&2; exit 1; }
deb="$(realpath "$deb")"
passed=0
failed=0
skipped=0

pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*" >&2; failed=$((failed + 1)); }
skip() { echo "skipped: $*"; skipped=$((skipped + 1)); }
quietly() { "$@" >/dev/null; }
check() { # check DESCRIPTION COMMAND...
    local what="$1"
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

apt_install() {
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    echo "check.sh: installing $*" >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

scratch="$(mktemp -d)"
cleanup_steps=("rm -rf '$scratch'")
cleanup() {
    local step
    for ((index = ${#cleanup_steps[@]} - 1; index >= 0; index--)); do
        step="${cleanup_steps[index]}"
        eval "$step" || true
    done
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. contents
echo "== $deb"
info="$(dpkg-deb -I "$deb")"
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: relayq" test "$(field Package)" = relayq
check "Section: mail" test "$(field Section)" = mail
for relation in Provides Conflicts Replaces; do
    check "$relation: mail-transport-agent" test "$(field "$relation")" = mail-transport-agent
done
check "Depends on adduser (the postinst creates the relayq user)" grep -qw adduser <<<"$(field Depends)"
check "Depends on libc6 (from dpkg-shlibdeps)" grep -qw libc6 <<<"$(field Depends)"
dpkg-deb -e "$deb" "$scratch/control"
check "conffile /etc/relayq/relayq.toml" grep -qx /etc/relayq/relayq.toml "$scratch/control/conffiles"
for script in postinst prerm postrm; do
    check "$script present and valid sh" sh -n "$scratch/control/$script"
done
grep -q 'Installed-Size' <<<"$info" || fail "dpkg-deb -I shows no Installed-Size"

contents="$(dpkg-deb -c "$deb")"
has() { grep -qE " \./$1\$" <<<"$contents"; }
check "/usr/sbin/relayq, mode 0755" grep -qE '^-rwxr-xr-x .* \./usr/sbin/relayq$' <<<"$contents"
check "/usr/sbin/sendmail -> relayq" has 'usr/sbin/sendmail -> relayq'
check "/usr/lib/sendmail -> ../sbin/relayq" has 'usr/lib/sendmail -> \.\./sbin/relayq'
check "/usr/bin/mailq -> ../sbin/relayq" has 'usr/bin/mailq -> \.\./sbin/relayq'
check "/etc/relayq/relayq.toml" has 'etc/relayq/relayq.toml'
check "systemd unit" has 'lib/systemd/system/relayq.service'
check "bash completion" has 'usr/share/bash-completion/completions/relayq'
check "zsh completion" has 'usr/share/zsh/vendor-completions/_relayq'
check "fish completion" has 'usr/share/fish/vendor_completions.d/relayq.fish'
check "sendmail(8) -> relayq-sendmail(8)" has 'usr/share/man/man8/sendmail\.8\.gz -> relayq-sendmail\.8\.gz'
check "mailq(8) -> relayq-queue-list(8)" has 'usr/share/man/man8/mailq\.8\.gz -> relayq-queue-list\.8\.gz'
check "no file under /usr/local" bash -c '! grep -q "\./usr/local" <<<"$1"' _ "$contents"

dpkg-deb -x "$deb" "$scratch/root"
relayq="$scratch/root/usr/sbin/relayq"
"$relayq" generate man "$scratch/expected-man" >/dev/null
expected_pages=0
for page in "$scratch"/expected-man/*.8; do
    name="$(basename "$page")"
    expected_pages=$((expected_pages + 1))
    has "usr/share/man/man8/$name\.gz" || fail "man page $name.gz missing"
done
((expected_pages >= 10)) && pass "a man page for each of the $expected_pages commands and subcommands" \
    || fail "only $expected_pages man pages generated"
check "relayq(8) lists the subcommands" bash -c 'zcat "$1" | grep -q "relayq\\\\-queue"' _ "$scratch/root/usr/share/man/man8/relayq.8.gz"
check "packaged config validates" "$relayq" check-config "$scratch/root/etc/relayq/relayq.toml"
unit="$scratch/root/lib/systemd/system/relayq.service"
check "unit runs /usr/sbin/relayq" grep -qx 'ExecStart=/usr/sbin/relayq serve --config /etc/relayq/relayq.toml' "$unit"
check "unit binds port 25 with CAP_NET_BIND_SERVICE as relayq" \
    bash -c 'grep -qx "User=relayq" "$1" && grep -qx "AmbientCapabilities=CAP_NET_BIND_SERVICE" "$1"' _ "$unit"
command -v systemd-analyze >/dev/null && {
    # Only the unit's own syntax: the binary is not installed here.
    if systemd-analyze verify "$unit" 2>&1 | grep -v -e 'relayq: Command /usr/sbin/relayq' -e 'is not executable' \
        -e 'Failed to prepare filename' -e 'Unit relayq.service has a bad unit file setting' | grep -q .; then
        systemd-analyze verify "$unit" || true
        fail "systemd-analyze verify relayq.service"
    else
        pass "systemd-analyze verify relayq.service"
    fi
}
# The real shells check their completion scripts' syntax.
need=()
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v lintian >/dev/null || need+=(lintian)
((${#need[@]} == 0)) || apt_install "${need[@]}" || echo "check.sh: could not install ${need[*]}" >&2
check "bash completion parses (bash -n)" bash -n "$scratch/root/usr/share/bash-completion/completions/relayq"
if command -v zsh >/dev/null; then
    check "zsh completion parses (zsh -n)" zsh -n "$scratch/root/usr/share/zsh/vendor-completions/_relayq"
else
    skip "zsh -n (zsh not installed)"
fi
if command -v fish >/dev/null; then
    check "fish completion parses (fish --no-execute)" fish --no-execute "$scratch/root/usr/share/fish/vendor_completions.d/relayq.fish"
else
    skip "fish --no-execute (fish not installed)"
fi

# ---------------------------------------------------------------- 2. lintian
command -v lintian >/dev/null || apt_install lintian
# Warnings fail too; each accepted one is overridden with its reason.
if lintian --fail-on error,warning "$deb" >"$scratch/lintian.log" 2>&1; then
    pass "lintian: no errors or warnings ($(grep -c '^[IPX]:' "$scratch/lintian.log" || true) notes)"
else
    cat "$scratch/lintian.log" >&2
    fail "lintian"
fi

# ---------------------------------------------------------------- 3. install
install_blocker() {
    if [[ "${RELAYQ_PACKAGE_INSTALL_TEST:-1}" == 0 ]]; then
        echo "RELAYQ_PACKAGE_INSTALL_TEST=0"
    elif ((EUID != 0)); then
        echo "not root"
    elif dpkg-query -W -f='${Status}\n' relayq 2>/dev/null | grep -q ' installed'; then
        echo "relayq is already installed here"
    elif mta="$(dpkg-query -W -f='${Package} ${Status} ${Provides}\n' 2>/dev/null |
        awk '$4 == "installed" && /mail-transport-agent/ {print $1}')" && [[ -n "$mta" ]]; then
        echo "another MTA is installed ($mta): installing relayq would remove it"
    elif (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then
        echo "something listens on 127.0.0.1:25"
    elif [[ -e /var/spool/relayq || -e /etc/relayq ]]; then
        echo "/var/spool/relayq or /etc/relayq exists (left by a hand install?)"
    fi
}
blocker="$(install_blocker)"
if [[ -n "$blocker" ]]; then
    skip "install, run and purge test: $blocker"
else
    command -v adduser >/dev/null || apt_install adduser
    cleanup_steps+=("dpkg --purge relayq >/dev/null 2>&1")
    check "dpkg -i" quietly dpkg -i "$deb"
    check "relayq user and group" quietly bash -c 'getent passwd relayq && getent group relayq'
    check "spool /var/spool/relayq owned by relayq, mode 0750" \
        test "$(stat -c '%U:%G %a' /var/spool/relayq)" = "relayq:relayq 750"
    check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/relayq.service
    check "daemon not started by the install" bash -c '! pgrep -f "^/usr/sbin/relayq serve" >/dev/null'
    check "relayq check-config /etc/relayq/relayq.toml" quietly relayq check-config /etc/relayq/relayq.toml

    # By hand as the relayq user, without the capability the unit grants:
    # port 25 is refused, and relayq says so.
    if setpriv --reuid=relayq --regid=relayq --init-groups \
        /usr/sbin/relayq serve --config /etc/relayq/relayq.toml >"$scratch/no-cap.log" 2>&1; then
        fail "relayq serve without CAP_NET_BIND_SERVICE bound port 25"
    else
        check "without CAP_NET_BIND_SERVICE, serve names 127.0.0.1:25 and the refusal" \
            grep -qiE '127\.0\.0\.1:25.*(permission denied|denied)' "$scratch/no-cap.log"
        echo "    it said: $(grep -iE 'denied' "$scratch/no-cap.log" | head -n 1)"
    fi

    # As the unit runs it: user relayq with CAP_NET_BIND_SERVICE as an
    # ambient capability. The packaged config, plus a route of every domain
    # to a closed loopback port: mail is deferred, and nothing (no DNS, no
    # SMTP) leaves the machine.
    closed_port=""
    for _ in $(seq 1 50); do
        candidate=$(((RANDOM % 20000) + 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then closed_port=$candidate; break; fi
    done
    [[ -n "$closed_port" ]] || { fail "no closed loopback port found"; closed_port=1; }
    config="$scratch/relayq.toml"
    cp /etc/relayq/relayq.toml "$config"
    printf '\n[[route]]\ndomains = ["*"]\nhost = "127.0.0.1"\nport = %d\ntls = "none"\n' "$closed_port" >>"$config"
    chmod 644 "$config"
    chmod 755 "$scratch"
    setpriv --reuid=relayq --regid=relayq --init-groups \
        --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
        /usr/sbin/relayq serve --config "$config" >"$scratch/serve.log" 2>&1 &
    daemon=$!
    cleanup_steps+=("kill $daemon 2>/dev/null; wait $daemon 2>/dev/null")
    listening=0
    for _ in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then listening=1; break; fi
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    if ((listening)); then
        pass "relayq serve as relayq, with the unit's capability, listens on 127.0.0.1:25"
        check "it runs as the relayq user" test "$(ps -o user= -p "$daemon")" = relayq
        check "control socket in the spool" test -S /var/spool/relayq/control.sock
        if printf 'Subject: package check\n\nhello from check.sh\n' |
            /usr/sbin/sendmail -i -f root@localhost someone@example.com; then
            pass "/usr/sbin/sendmail submits"
        else
            fail "/usr/sbin/sendmail submits"
        fi
        queued=""
        for _ in $(seq 1 50); do
            queued="$(mailq 2>&1 || true)"
            grep -q someone@example.com <<<"$queued" && break
            sleep 0.1
        done
        check "the message is in mailq" grep -q someone@example.com <<<"$queued"
        check "relayq queue list --json shows it" bash -c 'relayq queue list --json | grep -q "\"someone@example.com\""'
        check "metrics on 127.0.0.1:9325" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9325 &&
            printf "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" >&3 && grep -q "^relayq_queue_messages" <&3'
        if id nobody >/dev/null 2>&1; then
            setpriv --reuid=nobody --regid=nogroup --clear-groups mailq >/dev/null 2>&1 && status=0 || status=$?
            check "mailq as a user outside the relayq group: no permission (exit 77)" test "$status" -eq 77
        fi
        kill -TERM "$daemon"
        wait "$daemon" 2>/dev/null && status=0 || status=$?
        check "SIGTERM stops it cleanly" test "$status" -eq 0
    else
        cat "$scratch/serve.log" >&2
        fail "relayq serve as relayq with CAP_NET_BIND_SERVICE did not listen on 127.0.0.1:25"
    fi

    if [[ -e /usr/share/man/man8/relayq.8.gz ]]; then
        check "man relayq" bash -c 'MANPAGER=cat MANWIDTH=80 man 8 relayq 2>/dev/null | grep -q "relayq-queue"'
        check "man sendmail is relayq's" bash -c 'MANPAGER=cat man 8 sendmail 2>/dev/null | grep -qi "relayq"'
    else
        skip "man relayq: dpkg is configured to leave out man pages here (path-exclude)"
    fi
    check "bash completion installed" test -f /usr/share/bash-completion/completions/relayq

    check "dpkg -r" quietly dpkg -r relayq
    check "removed: binary and links gone" bash -c '! test -e /usr/sbin/relayq && ! test -e /usr/sbin/sendmail && ! test -e /usr/bin/mailq'
    check "removed: config, queue and user kept" bash -c 'test -f /etc/relayq/relayq.toml && test -d /var/spool/relayq && getent passwd relayq >/dev/null'
    check "dpkg --purge" quietly dpkg --purge relayq
    check "purged: config, queue, user, group and enablement gone" bash -c '! test -e /etc/relayq && ! test -e /var/spool/relayq &&
        ! getent passwd relayq >/dev/null && ! getent group relayq >/dev/null &&
        ! test -e /etc/systemd/system/multi-user.target.wants/relayq.service'
fi

echo "package: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
