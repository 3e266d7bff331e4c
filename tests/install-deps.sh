#!/usr/bin/env bash
# Installs the real control-plane binaries the playground (`kubectl multicluster local up`) and the
# end-to-end tests run, into a per-version cache directory, and prints where they are.
#
#   kube-apiserver  built from the k8s.io/kubernetes Go module (no registry ships the binary)
#   kube-proxy      built from the same module: the real data plane of the traffic end-to-end test
#   kubelet         built from the same module: a real node (with Debian's containerd and runc) for
#                   the test that runs snapshot hooks in containers
#   etcd            Debian's etcd-server package, unpacked without running its install scripts
#                   (its postinst would start a system etcd on the default ports)
#   minio           a real S3 server for the snapshot tests, `go install` from the module proxy
#
# Work already done is skipped, so a warm machine pays nothing. Versions: tests/versions.env.
# Cache root: $MULTICLUSTER_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/kubectl-multicluster.
#
#   tests/install-deps.sh               everything the tests run (tests/run calls this)
#   tests/install-deps.sh --playground  only what `kubectl multicluster local up` runs: etcd and
#                                       kube-apiserver (the README's first command)
set -euo pipefail

playground_only=false
case "${1:-}" in
  --playground) playground_only=true ;;
  "") ;;
  *) echo "usage: $0 [--playground]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${MULTICLUSTER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-multicluster}
k8s_dir="$cache/kubernetes/$KUBERNETES_VERSION"
etcd_dir="$cache/etcd/$ETCD_DEBIAN_VERSION"
minio_dir="$cache/minio/$MINIO_VERSION"
log() { printf '%s\n' "install-deps: $*" >&2; }

# Builds the named binaries of k8s.io/kubernetes that are not in the cache yet.
install_kube_binaries() {
  local missing=()
  for b in "$@"; do [[ -x "$k8s_dir/$b" ]] || missing+=("$b"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "$* $KUBERNETES_VERSION already in $k8s_dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build kube-apiserver"; exit 1; }
  log "building ${missing[*]} $KUBERNETES_VERSION from the k8s.io/kubernetes module (about 10 min on 2 cores, once)"
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    go mod init multicluster.dev/kube-apiserver-build >/dev/null 2>&1
    # k8s.io/kubernetes replaces its staging modules with ./staging/...; a consumer must replace each
    # with its published tag. Take the list from the module's own go.mod, as it changes per minor.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [[ -n "$gomod" ]] || { echo "install-deps: could not download k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; exit 1; }
    local staging
    staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u)
    [[ -n "$staging" ]] || { echo "install-deps: no staging replace lines found in $gomod" >&2; exit 1; }
    local args=()
    for m in $staging; do args+=("-replace=$m=$m@$staging_version"); done
    go mod edit "${args[@]}"
    local pkg=k8s.io/component-base/version
    mkdir -p "$k8s_dir"
    for b in "${missing[@]}"; do
      go get "k8s.io/kubernetes/cmd/$b@$KUBERNETES_VERSION" >&2
      CGO_ENABLED=0 go build -trimpath -o "$k8s_dir/$b.tmp" \
        -ldflags "-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor" \
        "k8s.io/kubernetes/cmd/$b"
      mv "$k8s_dir/$b.tmp" "$k8s_dir/$b"
    done
  )
  for b in "${missing[@]}"; do log "$b: $("$k8s_dir/$b" --version)"; done
}

# What the kube-proxy data plane needs around it: nftables (its proxy mode), conntrack (it flushes
# stale flows), socat (bridges the API server's loopback into the test's network namespace),
# iproute2 (network namespaces and veth pairs); zsh and fish, whose parsers check the completion
# scripts; containerd, runc and a static busybox (the image) for the real node's containers.
# Debian packages; installed only when missing (containerd is not started by its package here:
# the test starts its own, with its own socket and state).
install_data_plane_tools() {
  local want=()
  command -v zsh >/dev/null || want+=(zsh)
  command -v fish >/dev/null || want+=(fish)
  command -v nft >/dev/null || want+=(nftables)
  command -v conntrack >/dev/null || want+=(conntrack)
  command -v socat >/dev/null || want+=(socat)
  command -v ip >/dev/null || want+=(iproute2)
  command -v containerd >/dev/null || want+=(containerd)
  command -v runc >/dev/null || want+=(runc)
  [[ -x /usr/bin/busybox || -x /bin/busybox ]] || want+=(busybox-static)
  [[ ${#want[@]} -eq 0 ]] && return
  log "installing ${want[*]} (Debian packages)"
  if ! apt-get install -y --no-install-recommends "${want[@]}" >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${want[@]}" >&2
  fi
}

install_etcd() {
  if [[ -x "$etcd_dir/etcd" ]]; then
    log "etcd $ETCD_DEBIAN_VERSION already in $etcd_dir"
    return
  fi
  log "fetching Debian etcd-server $ETCD_DEBIAN_VERSION (unpacked, install scripts not run)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    if ! apt-get download "etcd-server=$ETCD_DEBIAN_VERSION" >&2 2>/dev/null; then
      apt-get update >&2
      apt-get download "etcd-server=$ETCD_DEBIAN_VERSION" >&2
    fi
    dpkg-deb -x etcd-server_*.deb root
    mkdir -p "$etcd_dir"
    install -m 0755 root/usr/bin/etcd "$etcd_dir/etcd"
  )
  log "etcd: $("$etcd_dir/etcd" --version | head -1)"
}

# MinIO: the S3 server snapshot archives are written to in the end-to-end tests.
install_minio() {
  if [[ -x "$minio_dir/minio" ]]; then
    log "minio $MINIO_VERSION already in $minio_dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build minio"; exit 1; }
  log "building minio $MINIO_VERSION from the Go module proxy (about 3 min on 2 cores, once)"
  mkdir -p "$minio_dir"
  GOBIN="$minio_dir/.build" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/minio/minio@$MINIO_VERSION" >&2
  mv "$minio_dir/.build/minio" "$minio_dir/minio"
  rmdir "$minio_dir/.build"
  log "minio: $("$minio_dir/minio" --version | head -1)"
}

install_etcd
if $playground_only; then
  install_kube_binaries kube-apiserver
else
  install_kube_binaries kube-apiserver kube-proxy kubelet
  install_minio
  install_data_plane_tools
fi
# stdout: where the binaries are, one KEY=path a line, for scripts to source.
echo "KUBE_APISERVER=$k8s_dir/kube-apiserver"
echo "ETCD=$etcd_dir/etcd"
$playground_only && exit 0
echo "KUBE_PROXY=$k8s_dir/kube-proxy"
echo "KUBELET=$k8s_dir/kubelet"
echo "MINIO=$minio_dir/minio"
