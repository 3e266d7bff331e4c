#!/usr/bin/env bash
# Times the README's first command as a new user meets it: a fresh clone, empty Cargo, Go and
# binary caches (nothing downloaded or built before), each step timed on its own, then `local up`
# and `local down`. Run from a checkout: tests/bench/first-command.sh [WORKDIR]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${1:-$(mktemp -d)}
git clone -q "$src" "$work/repo"
export CARGO_HOME="$work/cargo-home" GOCACHE="$work/go-cache" GOMODCACHE="$work/go-mod"
export MULTICLUSTER_CACHE_DIR="$work/binaries" KUBECONFIG="$work/kubeconfig"
cd "$work/repo"
t() { local s; s=$(date +%s); "$@" >"$work/step.log" 2>&1 || { tail -20 "$work/step.log"; exit 1; }; echo "$(( $(date +%s) - s ))"; }
a=$(t tests/install-deps.sh --playground)
b=$(t cargo build --locked -p kubectl-multicluster -p multicluster-webhook)
export PATH="$PWD/target/debug:$PATH"
c=$(t kubectl multicluster local up --dir "$work/playground")
kubectl multicluster local down --dir "$work/playground" >/dev/null 2>&1 || true
echo "install-deps --playground ${a}s; cargo build ${b}s; local up ${c}s; total $(( a + b + c ))s"
