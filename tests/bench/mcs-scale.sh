#!/usr/bin/env bash
# Multi-cluster services at scale: SERVICES (default 300) services exported by 2 members with a
# real node each, half ClusterSetIP, half headless: export → imported on both members and answered
# by the clusterset DNS (p50/p99, and against the same writes made directly); a headless
# endpoint's change → the other member's EndpointSlice and DNS answer (p50/p99 over ROUNDS).
# See tests/benches/mcs_scale.rs.
# Rerun: tests/bench/mcs-scale.sh [ROUNDS, default 20] [SERVICES, default 300]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tests/install-deps.sh --playground >/dev/null
cargo build --quiet --release --bins
ROUNDS=${1:-20} SERVICES=${2:-300} cargo bench --quiet -p multicluster-tests --bench mcs_scale
