#!/usr/bin/env bash
# Times `kubectl multicluster list` over 10 joined members, with all answering and with one hung
# (its API server stopped with SIGSTOP, as a dead host behaves), and checks that the hub keeps
# probing the others on time meanwhile (members are probed concurrently, each with its timeout).
# Rerun: tests/bench/members.sh [MEMBERS, default 10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
members=${1:-10}
tests/install-deps.sh >/dev/null
cargo build --quiet --release --bins
bin=$PWD/target/release/kubectl-multicluster
work=$(mktemp -d)
dir=$work/pg
hung=""
cleanup() { [ -n "$hung" ] && kill -CONT "$hung" 2>/dev/null; "$bin" local down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "starting a hub and $members members"
"$bin" local up --dir "$dir" --members "$members" --no-merge-kubeconfig -o json > "$work/state.json" 2>/dev/null
export KUBECONFIG=$dir/kubeconfig
for i in $(seq "$members"); do
  "$bin" join "member-$i" --member-context "member-$i" --context hub >/dev/null 2>&1
  kubectl --context hub patch membercluster "member-$i" --type merge \
    -p '{"spec":{"health":{"intervalSeconds":2,"timeoutSeconds":3,"failureThreshold":2}}}' >/dev/null
done
until [ "$("$bin" list --context hub -o json | python3 -c 'import json,sys; print(sum(r["healthy"]=="True" for r in json.load(sys.stdin)))')" = "$members" ]; do sleep 0.5; done

time_list() {
  python3 - "$bin" <<'PY'
import subprocess, sys, time
runs = []
for _ in range(7):
    t = time.monotonic()
    subprocess.run([sys.argv[1], "list", "--context", "hub"], check=True, capture_output=True)
    runs.append(time.monotonic() - t)
runs.sort()
print(f"median {runs[3]*1000:.0f} ms, max {runs[-1]*1000:.0f} ms over 7 runs")
PY
}
echo "list, all $members members answering: $(time_list)"
hung=$(python3 -c 'import json,sys; print([c for c in json.load(open(sys.argv[1]))["clusters"] if c["name"]=="member-'"$members"'"][0]["apiserver"]["pid"])' "$work/state.json")
kill -STOP "$hung"
sleep 8
echo "list, member-$members hung:       $(time_list)"
# Probing stays concurrent: the answering members' last probes are still recent.
"$bin" list --context hub -o json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
ages = [r["lastProbeAgeSeconds"] for r in rows if r["reason"] != "Unreachable"]
hung = [r for r in rows if r["reason"] == "Unreachable"]
print(f"while one member hangs: {len(hung)} unreachable, the other {len(ages)} last probed at most {max(ages)} s ago (interval 2 s, timeout 3 s)")'
