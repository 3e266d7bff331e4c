#!/usr/bin/env bash
# Times `kubectl multicluster local up` (hub + N members, binaries cached) and `local down`,
# RUNS times in a row, and prints each run and the median. Rerun: tests/bench/local-up.sh [RUNS] [MEMBERS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-5}
members=${2:-2}
tests/install-deps.sh >/dev/null
cargo build --quiet --release -p kubectl-multicluster
bin=target/release/kubectl-multicluster
dir=$(mktemp -d)/pg
trap '"$bin" local down --dir "$dir" >/dev/null 2>&1 || true' EXIT

ups=() downs=()
for i in $(seq "$runs"); do
  t0=$(date +%s.%N)
  "$bin" local up --dir "$dir" --members "$members" --no-merge-kubeconfig >/dev/null 2>&1
  t1=$(date +%s.%N)
  "$bin" local down --dir "$dir" >/dev/null 2>&1
  t2=$(date +%s.%N)
  up=$(echo "$t1 - $t0" | bc) down=$(echo "$t2 - $t1" | bc)
  ups+=("$up") downs+=("$down")
  printf 'run %d: local up %.2fs, local down %.2fs\n' "$i" "$up" "$down"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'median over %d runs (hub + %d members): local up %.2fs, local down %.2fs\n' \
  "$runs" "$members" "$(median "${ups[@]}")" "$(median "${downs[@]}")"
