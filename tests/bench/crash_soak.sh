#!/usr/bin/env bash
# relayq crash soak: CYCLES rounds of SMTP load with deliveries in flight, a
# SIGKILL at a random moment, and a restart; at the end every message that
# got `250` must have been delivered at least once.
#
# It runs the ignored test `crash_soak_long` in tests/it/crash_soak.rs, the same
# scenario `cargo test` runs with 3 cycles, and prints its report: per kill
# the load time before it, the sink sessions open and the deliveries recorded
# after it, the restart time (spawn to "relayq ready": spool opened and
# checked, schedule rebuilt, listening) with what the daemon found queued,
# and the duplicates that kill caused; then restart times (min, median, max),
# lost messages (must be 0), duplicates per kill (at-least-once allows them
# only for deliveries in flight at a kill) and messages delivered although
# their `250` never reached the client. The test fails if a message is lost,
# if a duplicate has no kill between its deliveries, or if a kill caused
# more duplicates than deliveries could be in flight.
#
# Knobs (environment):
#   CYCLES=20       kill/restart cycles (passed as RELAYQ_SOAK_CYCLES)
#   PROFILE=dev     cargo profile for the test and the relayq binary (dev|release)
#   TIMEOUT=1800    seconds the whole run (build included) may take
#   RESULTS_DIR=tests/bench/results   the report is also written there as
#                   crash-soak-<date>-<time>.txt
#
# Network: loopback only (the fake MX on 127.0.31.1 and .9, relayq and its
# DNS server on ephemeral 127.0.0.1 ports). Every wait in the test is
# bounded; the relay, the sink and the DNS server stop when the test ends.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

CYCLES=${CYCLES:-20}
PROFILE=${PROFILE:-dev}
TIMEOUT=${TIMEOUT:-1800}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/tests/bench/results}

[[ $CYCLES =~ ^[1-9][0-9]*$ ]] || { echo "CYCLES must be a positive number" >&2; exit 64; }
mkdir -p "$RESULTS_DIR"
report="$RESULTS_DIR/crash-soak-$(date +%Y-%m-%d-%H%M%S).txt"

cd "$ROOT"
{
    echo "# relayq crash soak, $(date -u +%Y-%m-%dT%H:%M:%SZ), $CYCLES cycles, profile $PROFILE"
    echo "# $(git rev-parse --short HEAD 2>/dev/null || echo unknown) on $(nproc) cores"
} | tee "$report"
RELAYQ_SOAK_CYCLES=$CYCLES timeout "$TIMEOUT" \
    cargo test --profile "$PROFILE" --test it -- \
    --ignored --exact crash_soak::crash_soak_long --nocapture --test-threads=1 2>&1 |
    grep -v -E '^\s*(Compiling|Blocking|Finished|Running|Executable)' | tee -a "$report"
echo "report: $report" >&2
