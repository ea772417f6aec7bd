#!/usr/bin/env bash
# Builds, from source fetched through the Go module proxy, the binaries of the local
# control plane the end-to-end tests run on (scripts/cluster/up.sh):
#
#   tools/k8s   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd
#   tools/kwok  kwok, the fake kubelet of the GPU nodes
#   tools/helm  helm
#
# Each tools/ module pins its versions in go.mod and go.sum (so the build is reproducible
# and checked against the checksum database); they are separate modules because kwok and
# helm pin newer k8s.io libraries than the Kubernetes release. The binaries land in
# $MATTE_CACHE/k8s/bin (default ~/.cache/matte), outside the repository, statically linked.
# Idempotent: a module is rebuilt only when its go.mod or go.sum, or this script's code,
# changed (a stamp file named after their hash; comments do not count). A cold build takes a while (all of Kubernetes compiles), so
# scripts/setup.sh --with-cluster calls this once and every later run is a no-op.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
source "$repo/scripts/versions.env"

cache="${MATTE_CACHE:-$HOME/.cache/matte}"
bin="$cache/k8s/bin"
mkdir -p "$bin"
log() { printf '[cluster/build] %s\n' "$*" >&2; }

# versions.env is where the versions are read by people; go.mod is what the build uses.
# Refuse to build when they disagree, so the two never drift apart silently.
require_pin() { # module-dir module version
  if ! grep -qE "^[[:space:]]*(require )?$2 v$3( // indirect)?$" "$repo/tools/$1/go.mod"; then
    log "tools/$1/go.mod does not require $2 v$3 as scripts/versions.env says"
    exit 1
  fi
}
require_pin k8s k8s.io/kubernetes "$KUBERNETES_VERSION"
require_pin k8s go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
require_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
require_pin helm helm.sh/helm/v3 "$HELM_VERSION"

stamp_of() { # module-dir → the stamp file for its go.mod + go.sum and this script's code
  local hash
  # The script's lines but its comments: a comment edited is no reason to spend minutes
  # compiling Kubernetes again, a flag changed is.
  hash=$( (cat "$repo/tools/$1/go.mod" "$repo/tools/$1/go.sum"; grep -v '^[[:space:]]*#' "$0") | sha256sum | cut -c1-16)
  echo "$bin/.built-$1-$hash"
}
binaries_of() { # module-dir → the binaries it provides
  case "$1" in
    k8s) echo kube-apiserver kube-controller-manager kube-scheduler kubectl etcd ;;
    *) echo "$1" ;;
  esac
}
need_build=()
for module in k8s kwok helm; do
  built=true
  [[ -f "$(stamp_of "$module")" ]] || built=false
  for b in $(binaries_of "$module"); do [[ -x "$bin/$b" ]] || built=false; done
  $built || need_build+=("$module")
done
if [[ ${#need_build[@]} -eq 0 ]]; then
  exit 0
fi

# --- a Go toolchain -------------------------------------------------------------------
# The modules need Go >= $GO_VERSION's minor release. Use the one on PATH when it is new
# enough; otherwise fetch the official toolchain from the Go module proxy (the same
# golang.org/toolchain module `GOTOOLCHAIN=auto` downloads; Debian's golang-go is too old),
# checked against the sha256 pinned in versions.env.
go_ok() { # go-binary → true when its version is at least GO_VERSION's major.minor
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  [[ "$(printf '%s\n%s\n' "${GO_VERSION%.*}" "$v" | sort -V | head -1)" == "${GO_VERSION%.*}" ]]
}
go_bin=$(command -v go || true)
if [[ -z "$go_bin" ]] || ! go_ok "$go_bin"; then
  # The toolchain pinned is linux-amd64's: elsewhere it would not run.
  if [[ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]]; then
    log "only linux-amd64's Go toolchain is pinned (GO_TOOLCHAIN_SHA256 in scripts/versions.env):"
    log "on $(uname -s)-$(uname -m), put Go ${GO_VERSION%.*} or newer on PATH"
    exit 1
  fi
  go_root="$cache/go-$GO_VERSION"
  if [[ ! -x "$go_root/bin/go" ]]; then
    log "fetching Go $GO_VERSION from the Go module proxy (golang.org/toolchain)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    curl -fsSL -o "$work/go.zip" \
      "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
    echo "$GO_TOOLCHAIN_SHA256  $work/go.zip" | sha256sum --check --status \
      || { log "sha256 of the Go toolchain does not match the pinned $GO_TOOLCHAIN_SHA256"; exit 1; }
    # Python's zipfile, not unzip, which a base system lacks; the modes are set below.
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$work/go.zip" "$work"
    rm -rf "$go_root"
    mv "$work/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64" "$go_root"
    chmod +x "$go_root"/bin/* "$go_root"/pkg/tool/*/*
  fi
  go_bin="$go_root/bin/go"
fi

# Static binaries (no cgo: nothing to link against, and they run anywhere); -trimpath and
# -s -w keep them reproducible and small. GOTOOLCHAIN=local: never switch toolchains behind
# our back; -mod=readonly: go.sum must already be complete (it is committed).
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -modcacherw"
# The Go module proxy alone (Go's default falls back to fetching a module from its
# repository), and its modules in this cache, not in ~/go (-modcacherw: writable, so that
# removing the cache needs no chmod). The build cache is this run's alone: compiling
# Kubernetes leaves 4 GB there, worth keeping only for a rebuild, which comes only with a
# version change, while the disk it holds is the test suite's.
build_cache="$cache/go/build.$$"
trap 'rm -rf "$build_cache" ${work:+"$work"}' EXIT
# The shared build cache this script once kept, and those of runs killed before their
# trap ran (scripts/setup.sh runs one build of a cache at a time, under its lock).
rm -rf "$cache/go/build" "$cache"/go/build.*
export GOPROXY=https://proxy.golang.org GOMODCACHE="$cache/go/mod" GOCACHE="$build_cache"
build() { # module-dir output-name package [ldflags]
  log "building $2 ($3)"
  (cd "$repo/tools/$1" && "$go_bin" build -trimpath -ldflags "-s -w ${4:-}" -o "$bin/$2.partial" "$3")
  mv "$bin/$2.partial" "$bin/$2"
}
# The version stamps each project's own release build sets (Kubernetes' hack/lib/version.sh,
# helm's Makefile). Without them the servers report v0.0.0-master, which breaks every
# version check (a chart's kubeVersion: >=1.33 refuses to install), and helm assumes
# Kubernetes 1.20 when it renders offline.
kube_version_ldflags() {
  local v="v$KUBERNETES_VERSION" minor
  minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$pkg" "$v" "$pkg" "$pkg" "$minor" "$pkg"
  done
}
helm_version_ldflags() {
  # helm's notion of "the current Kubernetes" follows the client-go it is built with (1.x for v0.x)
  local client_go minor
  client_go=$(cd "$repo/tools/helm" && "$go_bin" list -m -f '{{.Version}}' k8s.io/client-go)
  minor=$(cut -d. -f2 <<<"$client_go")
  printf -- '-X helm.sh/helm/v3/internal/version.version=v%s -X helm.sh/helm/v3/internal/version.gitTreeState=clean ' "$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    printf -- '-X %s.k8sVersionMajor=1 -X %s.k8sVersionMinor=%s ' "$pkg" "$pkg" "$minor"
  done
}
for module in "${need_build[@]}"; do
  start=$SECONDS
  case "$module" in
    k8s)
      for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        build k8s "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$(kube_version_ldflags)"
      done
      # the etcd server's main package is the root of its module (go.etcd.io/etcd/server/v3)
      build k8s etcd go.etcd.io/etcd/server/v3
      ;;
    kwok) build kwok kwok sigs.k8s.io/kwok/cmd/kwok ;;
    helm) build helm helm helm.sh/helm/v3/cmd/helm "$(helm_version_ldflags)" ;;
  esac
  rm -f "$bin/.built-$module-"*
  touch "$(stamp_of "$module")"
  log "tools/$module built in $((SECONDS - start))s"
done
log "ready: $bin"
