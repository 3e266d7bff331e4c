#!/usr/bin/env bash
# Snapshot and restore benchmark: a namespace of 2,000 objects and 20 claims snapshotted on member-1
# and restored into member-2, against kubectl get -o yaml + apply --server-side by hand in the same
# run; the restore conflict check's admission round trip (p50/p99) for a 2,000-object target and an
# empty one. See tests/benches/snapshot_restore.rs.
# Rerun: tests/bench/snapshot.sh [ROUNDS of the conflict check, default 200]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tests/install-deps.sh >/dev/null
cargo build --quiet --release --bins
ROUNDS=${1:-200} cargo bench --quiet -p multicluster-tests --bench snapshot_restore
