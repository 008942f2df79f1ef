#!/usr/bin/env bash
# Writes a BIND setup that serves the delivery benchmark's zones under a
# DNSSEC-signed root, for DNSSEC=1 / DANE=1 in delivery.sh:
#
#   .          signed (its key is the trust anchor relayq is given)
#   test.      signed, DS in the root
#   dN.test.   unsigned, delegated without DS: MX 10 mx.bench.test
#   bench.test unsigned, delegated without DS: mx.bench.test A 127.0.0.1
#
# so every recipient domain and its MX host are provably insecure, as most
# of the mail a relay sends is (a signed TLD, an unsigned domain): what
# `delivery.dane = true` costs for mail to domains without DNSSEC.
#
# Usage: signed_zones.sh DIR PORT DOMAINS
# Writes DIR/named.conf, the zone files, DIR/trust-anchor (the root's
# DNSKEY, one line, for [dns] trust_anchor). Start with:
#   named -g -c DIR/named.conf
set -euo pipefail

DIR=$1 PORT=$2 DOMAINS=$3
mkdir -p "$DIR/keys"
cd "$DIR"

SOA='@ 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 3600
@ 3600 IN NS ns.test.'

# Unsigned zones: the recipient domains and the MX host's zone.
for ((i = 1; i <= DOMAINS; i++)); do
    printf '%s\n@ 3600 IN MX 10 mx.bench.test.\n' "$SOA" >"d$i.test.zone"
done
printf '%s\nmx 3600 IN A 127.0.0.1\n' "$SOA" >bench.test.zone

# test.: the name server's address, and the delegations (NS, no DS).
{
    printf '%s\nns 3600 IN A 127.0.0.1\nbench 3600 IN NS ns.test.\n' "$SOA"
    for ((i = 1; i <= DOMAINS; i++)); do printf 'd%d 3600 IN NS ns.test.\n' "$i"; done
} >test.zone
# The root: test. delegated with a DS (added when it is signed).
printf '%s\ntest. 3600 IN NS ns.test.\nns.test. 3600 IN A 127.0.0.1\n' "$SOA" >root.zone

# One combined signing key per signed zone; test. first, so its DS exists
# (dsset-test.) when the root is signed with -g.
for zone in test .; do
    dnssec-keygen -q -K keys -a ECDSAP256SHA256 -f KSK -n ZONE "$zone" >/dev/null
done
dnssec-signzone -q -z -K keys -S -o test. -d . -f test.zone.signed test.zone >/dev/null
dnssec-signzone -q -z -K keys -S -g -d . -o . -f root.zone.signed root.zone >/dev/null

# The root's public key, as relayq reads a trust anchor: one DNSKEY line.
grep -h 'DNSKEY 257' keys/K.+013+*.key | grep -v '^;' >trust-anchor

{
    cat <<EOF
options {
    directory "$DIR";
    pid-file "$DIR/named.pid";
    listen-on port $PORT { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    notify no;
};
zone "." { type primary; file "$DIR/root.zone.signed"; };
zone "test" { type primary; file "$DIR/test.zone.signed"; };
zone "bench.test" { type primary; file "$DIR/bench.test.zone"; };
EOF
    for ((i = 1; i <= DOMAINS; i++)); do
        printf 'zone "d%d.test" { type primary; file "%s/d%d.test.zone"; };\n' "$i" "$DIR" "$i"
    done
} >named.conf
