#!/usr/bin/env bash
# Multi-cluster services benchmark: 10 members, 50 services exported by all of them; a member's
# health transition → the last of its 500 EndpointSlices updated on every member (p50/p99 over
# ROUNDS failures and recoveries). See tests/benches/services_failover.rs.
# Rerun: tests/bench/services.sh [ROUNDS, default 10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tests/install-deps.sh >/dev/null
cargo build --quiet --release --bins
ROUNDS=${1:-10} cargo bench --quiet -p multicluster-tests --bench services_failover
