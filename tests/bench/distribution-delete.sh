#!/usr/bin/env bash
# Removal benchmark (issue 22): a Distribution of 1,000 ConfigMaps, 100 Secrets and 100 Deployments
# on two members is deleted with `kubectl multicluster distribute delete` (the hub server removes
# every copy from both members, then the 1,200 sources stored on the hub), side by side in one run
# with what a user does by hand: `kubectl delete -f DIR` once per member context for the same
# bundle applied with `kubectl apply --server-side`. Each round uses fresh namespaces.
# Rerun: tests/bench/distribution-delete.sh [ROUNDS, default 3]   (PROFILE=debug to use the debug
# build instead of a release build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
profile=${PROFILE:-release}
tests/install-deps.sh >/dev/null
if [ "$profile" = release ]; then cargo build --quiet --release --bins; else cargo build --quiet --bins; fi
bin=$PWD/target/$profile/kubectl-multicluster
work=$(mktemp -d)
dir=$work/pg
cleanup() { "$bin" local down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "starting a hub and 2 members ($profile build of the hub server)"
"$bin" local up --dir "$dir" --members 2 --no-merge-kubeconfig -o json > "$work/state.json" 2>/dev/null
export KUBECONFIG=$dir/kubeconfig
for m in member-1 member-2; do
  "$bin" join "$m" --member-context "$m" --context hub >/dev/null 2>&1
done

seconds() { python3 -c 'import time; print(f"{time.monotonic():.3f}")'; }
count() { kubectl --context "$1" get configmaps,secrets,deployments -n "$2" --no-headers 2>/dev/null | grep -vc kube-root-ca || true; }
results=$work/results
for round in $(seq "$rounds"); do
  kns=del-kubectl-$round
  mns=del-mc-$round
  python3 tests/bench/gen-bundle.py "$work/k$round" "$kns" 1000 100 100
  python3 tests/bench/gen-bundle.py "$work/m$round" "$mns" 1000 100 100
  for m in member-1 member-2; do
    kubectl --context "$m" create namespace "$kns" >/dev/null
    kubectl --context "$m" apply --server-side -f "$work/k$round" >/dev/null
  done
  kubectl --context hub create namespace "$mns" >/dev/null
  "$bin" distribute -f "$work/m$round" --to member-1,member-2 --name "del-$round" --context hub >/dev/null 2>&1
  for m in member-1 member-2; do
    [ "$(count "$m" "$mns")" = 1200 ] || { echo "$m does not hold the 1,200 copies" >&2; exit 1; }
  done

  t0=$(seconds)
  for m in member-1 member-2; do kubectl --context "$m" delete -f "$work/k$round" --wait=false >/dev/null; done
  t1=$(seconds)
  "$bin" distribute delete "del-$round" --context hub --timeout 10m >/dev/null 2>&1
  t2=$(seconds)
  for m in member-1 member-2; do
    n=$(count "$m" "$mns")
    [ "$n" = 0 ] || { echo "$m still holds $n copies of del-$round" >&2; exit 1; }
  done
  left=$(kubectl --context hub get configmaps,secrets,deployments -n "$mns" -l "multicluster.dev/source-of=del-$round" --no-headers 2>/dev/null | wc -l)
  [ "$left" = 0 ] || { echo "the hub still holds $left sources of del-$round" >&2; exit 1; }
  echo "$t0 $t1 $t2" >> "$results"
  echo "round $round done"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
k = [r[1]-r[0] for r in rows]; m = [r[2]-r[1] for r in rows]
med = statistics.median
print(f"{'':40}{'kubectl delete x2':>18}{'distribute delete':>18}{'ratio':>8}")
print(f"{'remove 1,200 objects from 2 members':40}{med(k):>17.2f}s{med(m):>17.2f}s{med(m)/med(k):>7.2f}x")
print(f"(medians of {len(rows)} rounds; distribute delete also deletes the 1,200 sources on the hub and waits for the Distribution to go)")
PY
