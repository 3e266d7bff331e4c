#!/usr/bin/env bash
# Times `kubectl multicluster local up` and `local down` (hub + MEMBERS members, binaries cached)
# with real nodes (--nodes 1, the default) and API servers only (--nodes 0), alternated in one run
# so that both see the same machine, RUNS times each; prints each run, the medians, where the time
# of an up with nodes goes (from its progress lines), and the resident memory of the whole
# playground with nodes (every process it started, containers included).
# Rerun: tests/bench/local-up.sh [RUNS] [MEMBERS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-5}
members=${2:-2}
tests/install-deps.sh --playground >/dev/null
cargo build --quiet --release -p kubectl-multicluster -p multicluster-webhook
bin=target/release/kubectl-multicluster
dir=$(mktemp -d /tmp/pg-bench.XXXX)/pg
trap '"$bin" local down --dir "$dir" >/dev/null 2>&1 || true' EXIT

now() { date +%s.%N; }
declare -A ups downs
for i in $(seq "$runs"); do
  for nodes in 1 0; do
    t0=$(now)
    "$bin" local up --dir "$dir" --members "$members" --nodes "$nodes" --no-merge-kubeconfig \
      2> >(while IFS= read -r line; do printf '%.2f %s\n' "$(echo "$(now) - $t0" | bc)" "$line"; done > "$dir.progress.$nodes") >/dev/null
    t1=$(now)
    if [[ $nodes == 1 && $i == 1 ]]; then
      sleep 5 # let the nodes settle before measuring memory
      pids=$(grep -l -s -F "$dir" /proc/[0-9]*/cmdline | cut -d/ -f3 | sort -u)
      # The containers' processes name no path of the playground: add their shims' children.
      for shim in $(pgrep -f containerd-shim-runc-v2 || true); do
        grep -q -s -F "$dir" "/proc/$shim/cmdline" && pids="$pids $(pgrep -P "$shim" | tr '\n' ' ')"
      done
      rss_kb=0
      for p in $pids; do
        r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        rss_kb=$(( rss_kb + ${r:-0} ))
      done
      mem="resident memory with nodes: $(( rss_kb / 1024 )) MiB in $(echo "$pids" | wc -w) processes"
      cp "$dir.progress.1" "$dir.progress.first"
    fi
    "$bin" local down --dir "$dir" >/dev/null 2>&1
    t2=$(now)
    ups[$nodes]+="$(echo "$t1 - $t0" | bc) " downs[$nodes]+="$(echo "$t2 - $t1" | bc) "
    printf 'run %d --nodes %d: local up %.2fs, local down %.2fs\n' "$i" "$nodes" \
      "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for nodes in 1 0; do
  # shellcheck disable=SC2086
  printf 'median over %d runs, hub + %d members, --nodes %d: local up %.2fs, local down %.2fs\n' \
    "$runs" "$members" "$nodes" "$(median ${ups[$nodes]})" "$(median ${downs[$nodes]})"
done
echo "where the first up with nodes spent its time (seconds since start, progress line):"
sed 's/^/  /' "$dir.progress.first"
echo "$mem"
