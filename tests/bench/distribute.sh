#!/usr/bin/env bash
# Distribution benchmark: 1,000 ConfigMaps, 100 Secrets and 100 Deployments to two members, side by
# side in one run with what a user does by hand, `kubectl apply --server-side -f DIR` once per
# member context. Each round uses fresh namespaces, so every write is a real creation. Also times a
# second, unchanged run of each (what re-running after editing nothing costs).
# Rerun: tests/bench/distribute.sh [ROUNDS, default 3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
tests/install-deps.sh >/dev/null
cargo build --quiet --release --bins
bin=$PWD/target/release/kubectl-multicluster
work=$(mktemp -d)
dir=$work/pg
cleanup() { "$bin" local down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "starting a hub and 2 members (release build of the hub server)"
"$bin" local up --dir "$dir" --members 2 --no-merge-kubeconfig -o json > "$work/state.json" 2>/dev/null
export KUBECONFIG=$dir/kubeconfig
for m in member-1 member-2; do
  "$bin" join "$m" --member-context "$m" --context hub >/dev/null 2>&1
done

seconds() { python3 -c 'import sys,time; print(f"{time.monotonic():.3f}")'; }
results=$work/results
for round in $(seq "$rounds"); do
  kns=bench-kubectl-$round
  mns=bench-mc-$round
  python3 tests/bench/gen-bundle.py "$work/k$round" "$kns" 1000 100 100
  python3 tests/bench/gen-bundle.py "$work/m$round" "$mns" 1000 100 100
  for m in member-1 member-2; do kubectl --context "$m" create namespace "$kns" >/dev/null; done
  kubectl --context hub create namespace "$mns" >/dev/null

  t0=$(seconds)
  for m in member-1 member-2; do kubectl --context "$m" apply --server-side -f "$work/k$round" >/dev/null; done
  t1=$(seconds)
  "$bin" distribute -f "$work/m$round" --to member-1,member-2 --name "bench-$round" --context hub >/dev/null 2>&1
  t2=$(seconds)
  for m in member-1 member-2; do kubectl --context "$m" apply --server-side -f "$work/k$round" >/dev/null; done
  t3=$(seconds)
  "$bin" distribute -f "$work/m$round" --to member-1,member-2 --name "bench-$round" --context hub >/dev/null 2>&1
  t4=$(seconds)
  for m in member-1 member-2; do
    n=$(kubectl --context "$m" get configmaps,secrets,deployments -n "$mns" --no-headers | grep -vc kube-root-ca)
    [ "$n" = 1200 ] || { echo "member $m has $n objects in $mns, not 1200" >&2; exit 1; }
  done
  echo "$t0 $t1 $t2 $t3 $t4" >> "$results"
  echo "round $round done"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
k1 = [r[1]-r[0] for r in rows]; m1 = [r[2]-r[1] for r in rows]
k2 = [r[3]-r[2] for r in rows]; m2 = [r[4]-r[3] for r in rows]
med = statistics.median
print(f"{'':34}{'kubectl loop':>14}{'distribute':>12}{'ratio':>8}")
print(f"{'first run (1,200 objects x 2)':34}{med(k1):>13.2f}s{med(m1):>11.2f}s{med(k1)/med(m1):>7.1f}x")
print(f"{'unchanged re-run':34}{med(k2):>13.2f}s{med(m2):>11.2f}s{med(k2)/med(m2):>7.1f}x")
print(f"(medians of {len(rows)} rounds; distribute includes storing the sources on the hub and waiting for both members)")
PY
