#!/usr/bin/env bash
# Installs the real control-plane binaries the playground (`kubectl multicluster local up`) and the
# end-to-end tests run, into a per-version cache directory, and prints where they are.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                   built from the k8s.io/kubernetes Go module (no registry ships the binaries): every
#                   playground cluster's control plane, and its nodes (kubelet and kube-proxy, with
#                   Debian's containerd, runc and CNI plugins)
#   etcd            built from the go.etcd.io/etcd/server/v3 Go module
#   csi-provisioner, csi-snapshotter, snapshot-controller
#                   the Kubernetes CSI sidecars and snapshot controller, from their Go modules:
#                   dynamic provisioning and snapshots on the playground's nodes
#   csi-sanity      the CSI conformance suite (tests only)
#   coredns         the cluster DNS of the playground's members, `go install` from the module proxy
#   kwok            keeps the playground's simulated nodes alive (`local up --simulated-nodes N`)
#   minio           a real S3 server for the snapshot tests, `go install` from the module proxy
#
# Work already done is skipped, so a warm machine pays nothing. Versions: tests/versions.env.
# Cache root: $MULTICLUSTER_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/kubectl-multicluster.
#
#   tests/install-deps.sh               everything the tests run (tests/run calls this)
#   tests/install-deps.sh --playground  only what `kubectl multicluster local up` runs (the README's
#                                       first command): etcd, the Kubernetes binaries, and the
#                                       Debian packages a node needs
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
etcd_dir="$cache/etcd/$ETCD_VERSION"
minio_dir="$cache/minio/$MINIO_VERSION"
csi_dir="$cache/csi"
kwok_dir="$cache/kwok/$KWOK_VERSION"
coredns_dir="$cache/coredns/$COREDNS_VERSION"
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
  # Expanded now and cleared when it runs: a RETURN trap outlives the function that set it.
  trap "rm -rf '$work'; trap - RETURN" RETURN
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

# Debian packages, installed only when missing:
# - what a playground node runs: containerd and runc (each node starts its own containerd, with its
#   own socket and state: the package's system service is not used), the CNI plugins (bridge,
#   host-local, loopback), a static busybox (the playground's image), iproute2 (network namespaces,
#   veth pairs, the bridge), nftables and conntrack (kube-proxy's nftables mode);
# - for the tests only: socat (bridges an API server's loopback into a test's network namespace),
#   zsh and fish (their parsers check the completion scripts).
install_debian_packages() {
  local want=()
  command -v containerd >/dev/null || want+=(containerd)
  command -v runc >/dev/null || want+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || want+=(containernetworking-plugins)
  [[ -x /usr/bin/busybox || -x /bin/busybox ]] || want+=(busybox-static)
  command -v ip >/dev/null || want+=(iproute2)
  command -v nft >/dev/null || want+=(nftables)
  command -v conntrack >/dev/null || want+=(conntrack)
  if ! $playground_only; then
    command -v socat >/dev/null || want+=(socat)
    command -v zsh >/dev/null || want+=(zsh)
    command -v fish >/dev/null || want+=(fish)
  fi
  [[ ${#want[@]} -eq 0 ]] && return
  log "installing ${want[*]} (Debian packages)"
  if ! apt-get install -y --no-install-recommends "${want[@]}" >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${want[@]}" >&2
  fi
}

# etcd from its Go module: a wrapper module requires the server and pins its sibling modules
# (api, client/pkg, client/v3, pkg) to the same release, as etcd's own go.mod replaces them with
# local directories.
install_etcd() {
  if [[ -x "$etcd_dir/etcd" ]]; then
    log "etcd $ETCD_VERSION already in $etcd_dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build etcd"; exit 1; }
  log "building etcd $ETCD_VERSION from the go.etcd.io/etcd/server/v3 module (about 1 min, once)"
  local work; work=$(mktemp -d)
  # Expanded now and cleared when it runs: a RETURN trap outlives the function that set it.
  trap "rm -rf '$work'; trap - RETURN" RETURN
  (
    cd "$work"
    go mod init multicluster.dev/etcd-build >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    for m in api client/pkg client/v3 pkg; do
      go mod edit -replace="go.etcd.io/etcd/$m/v3=go.etcd.io/etcd/$m/v3@$ETCD_VERSION"
    done
    printf 'package main\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy >&2
    mkdir -p "$etcd_dir"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
  )
  log "etcd: $("$etcd_dir/etcd" --version | head -1)"
}

# Go commands of a module whose go.mod has replace directives (so `go install mod@v` is refused):
# a wrapper module requires it and copies its replace lines; a replace with a local directory (like
# external-snapshotter's `./client`) becomes a require of that module at the same version.
#   build_go_commands DEST_DIR MODULE VERSION PACKAGE...
build_go_commands() {
  local dest=$1 module=$2 version=$3; shift 3
  local missing=()
  for p in "$@"; do [[ -x "$dest/${p##*/}" ]] || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "${module#*/} $version already in $dest"
    return
  fi
  command -v go >/dev/null || { log "go is required to build ${module}"; exit 1; }
  log "building ${missing[*]##*/} $version from $module (a few minutes, once)"
  local work; work=$(mktemp -d)
  # Expanded now and cleared when it runs: a RETURN trap outlives the function that set it.
  trap "rm -rf '$work'; trap - RETURN" RETURN
  (
    cd "$work"
    go mod init multicluster.dev/go-build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [[ -n "$gomod" ]] || { echo "install-deps: could not download $module@$version" >&2; exit 1; }
    go mod edit -require="$module@$version"
    local from to ver
    while read -r from to ver; do
      if [[ $to == ./* ]]; then
        go mod edit -require="$from@$version"
      else
        go mod edit -replace="$from=$to${ver:+@$ver}"
      fi
    done < <(sed -n -E 's/^[[:space:]]*(replace[[:space:]]+)?([^[:space:](]+)([[:space:]]+v[^[:space:]]+)?[[:space:]]+=>[[:space:]]+([^[:space:]]+)[[:space:]]*([^[:space:]]*).*/\2 \4 \5/p' "$gomod")
    { printf '//go:build tools\n\npackage main\n\nimport (\n'; printf '\t_ "%s"\n' "${missing[@]}"; printf ')\n'; } > tools.go
    go mod tidy >&2
    mkdir -p "$dest"
    for p in "${missing[@]}"; do
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest/${p##*/}.tmp" "$p"
      mv "$dest/${p##*/}.tmp" "$dest/${p##*/}"
    done
  )
}

install_csi() {
  build_go_commands "$csi_dir/external-provisioner/$CSI_PROVISIONER_VERSION" \
    github.com/kubernetes-csi/external-provisioner/v6 "$CSI_PROVISIONER_VERSION" \
    github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
  build_go_commands "$csi_dir/external-snapshotter/$CSI_SNAPSHOTTER_VERSION" \
    github.com/kubernetes-csi/external-snapshotter/v8 "$CSI_SNAPSHOTTER_VERSION" \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
  $playground_only && return
  build_go_commands "$csi_dir/csi-test/$CSI_TEST_VERSION" \
    github.com/kubernetes-csi/csi-test/v5 "$CSI_TEST_VERSION" \
    github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity
}

# A command of a module whose go.mod has no replace directives, so that `go install mod@v` works:
#   go_install DEST_DIR PACKAGE VERSION "HOW LONG"
go_install() {
  local dest=$1 package=$2 version=$3 how_long=$4
  local name=${package##*/}
  [[ $name == v[0-9]* ]] && { name=${package%/*}; name=${name##*/}; }
  if [[ -x "$dest/$name" ]]; then
    log "$name $version already in $dest"
    return
  fi
  command -v go >/dev/null || { log "go is required to build $name"; exit 1; }
  log "building $name $version from the Go module proxy ($how_long, once)"
  mkdir -p "$dest"
  GOBIN="$dest/.build" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$package@$version" >&2
  mv "$dest/.build/$name" "$dest/$name"
  rmdir "$dest/.build"
}

install_etcd
install_kube_binaries kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
install_debian_packages
install_csi
# KWOK keeps the simulated nodes alive; CoreDNS is the members' cluster DNS; MinIO is the S3 server
# snapshot archives are written to in the end-to-end tests.
go_install "$kwok_dir" sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "about 2 min"
go_install "$coredns_dir" github.com/coredns/coredns "$COREDNS_VERSION" "about 2 min"
$playground_only || go_install "$minio_dir" github.com/minio/minio "$MINIO_VERSION" "about 3 min on 2 cores"
# stdout: where the binaries are, one KEY=path a line, for scripts to source.
echo "ETCD=$etcd_dir/etcd"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  key=${b^^}; echo "${key//-/_}=$k8s_dir/$b"
done
echo "CSI_PROVISIONER=$csi_dir/external-provisioner/$CSI_PROVISIONER_VERSION/csi-provisioner"
echo "CSI_SNAPSHOTTER=$csi_dir/external-snapshotter/$CSI_SNAPSHOTTER_VERSION/csi-snapshotter"
echo "SNAPSHOT_CONTROLLER=$csi_dir/external-snapshotter/$CSI_SNAPSHOTTER_VERSION/snapshot-controller"
echo "KWOK=$kwok_dir/kwok"
echo "COREDNS=$coredns_dir/coredns"
$playground_only && exit 0
echo "CSI_SANITY=$csi_dir/csi-test/$CSI_TEST_VERSION/csi-sanity"
echo "MINIO=$minio_dir/minio"
