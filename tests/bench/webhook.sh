#!/usr/bin/env bash
# Benchmarks the hub server's admission endpoint, in one run, on this machine:
#  1. direct AdmissionReview load over HTTPS keep-alive (wrk) with 3, 6 and 15 KB reviews on
#     1 and 8 connections: throughput, p50, p99 (the validating fence, admitted path, Intent cached);
#  2. through the API server: 1,000 Service creates (16 in flight) with and without the webhook
#     configurations, and the ratio (cargo bench --bench webhook_overhead).
# Rerun: tests/bench/webhook.sh [SECONDS per wrk run, default 10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
secs=${1:-10}
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }; }
tests/install-deps.sh >/dev/null
cargo build --quiet --release --bins
bin=target/release/kubectl-multicluster
work=$(mktemp -d)
dir=$work/pg
trap '"$bin" local down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$bin" local up --dir "$dir" --members 0 --no-merge-kubeconfig -o json > "$work/state.json" 2>/dev/null
export KUBECONFIG=$dir/kubeconfig
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hubServer"]["url"])' "$work/state.json")
kubectl create namespace bench >/dev/null
"$bin" intent register orders --id bench-id --holder bench -n bench >/dev/null

echo "== direct AdmissionReview load on $url/validate/intent (wrk, ${secs}s per run)"
printf '%-8s %-6s %12s %10s %10s\n' size conns "reviews/s" p50 p99
for kb in 3 6 15; do
  python3 - "$kb" > "$work/review-$kb.json" <<'PY'
import json, sys
kb = int(sys.argv[1])
obj = {"apiVersion": "v1", "kind": "ConfigMap",
       "metadata": {"name": "orders-config", "namespace": "bench",
                    "labels": {"multicluster.dev/managed-by-intent": "orders"},
                    "annotations": {"multicluster.dev/written-with-intent-id": "bench-id"}},
       "data": {}}
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "b6d5c1a8-0f33-4c43-9a35-4f4d1c2e9b11",
                      "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                      "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                      "name": "orders-config", "namespace": "bench", "operation": "CREATE",
                      "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
                      "object": obj, "oldObject": None, "dryRun": False}}
i = 0
while len(json.dumps(review)) < kb * 1024:
    obj["data"][f"key-{i:04d}"] = "v" * 64
    i += 1
print(json.dumps(review))
PY
  cat > "$work/post-$kb.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/review-$kb.json", "r"); wrk.body = f:read("*a"); f:close()
LUA
  # Sanity: the review is admitted (the measured path is the real decision, not an error).
  curl -sS --cacert "$dir/hub-server/ca.crt" -H 'Content-Type: application/json' \
    --data-binary @"$work/review-$kb.json" "$url/validate/intent" | grep -q '"allowed":true'
  for conns in 1 8; do
    threads=$(( conns < 2 ? 1 : 2 ))
    out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$work/post-$kb.lua" "$url/validate/intent")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    printf '%-8s %-6s %12s %10s %10s %s\n' "${kb}KB" "$conns" "$rps" "$p50" "$p99" "$errs"
  done
done
"$bin" local down --dir "$dir" >/dev/null 2>&1

echo "== through the API server (1,000 Service creates, 16 in flight)"
cargo bench --quiet -p multicluster-tests --bench webhook_overhead
