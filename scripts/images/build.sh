#!/usr/bin/env bash
# Builds Matte's container images with podman, from the package registries only, into
# podman's local store and as OCI archives in $MATTE_CACHE/oci:
#
#   localhost/matte-operator:<version>        the operator
#   localhost/matte-gateway:<version>         the gateway in front of a service's pods
#   localhost/matte-inference:<version>       the inference server (CPU), also the model
#                                             init container (matte-inference fetch-model)
#   localhost/matte-inference:<version>-cuda  with --cuda: onnxruntime-gpu and the CUDA 13
#                                             and cuDNN 9 libraries of PyPI's nvidia-* wheels
#
# All run as UID 65532 and need no writable root filesystem. The base root filesystem is
# Debian's glibc, libgcc, libstdc++ and CA roots, unpacked by mmdebstrap (no shell, no
# package manager); ONNX Runtime comes from the wheels scripts/setup.sh fetched.
#
# Cached: an image is rebuilt only when its inputs change (the Containerfile, the base,
# the binary, the libraries), so a second run with nothing changed builds nothing.
#
#   scripts/images/build.sh [--profile release|dev] [--cuda] [--cuda-only]
#
# --profile dev packs the binaries of cargo's dev profile (what `cargo test` builds
# anyway, stripped of debug info): the tests use it to add no compilation to CI. Its
# images and archives are tagged `<version>-dev`, so that they never replace the release
# ones, which are what to ship. Needs podman, runc and mmdebstrap (scripts/setup.sh --with-images).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/scripts/images"
source "$root/scripts/versions.env"
cache="${MATTE_CACHE:-$HOME/.cache/matte}"
profile=release
cpu=true
cuda=false
while (($#)); do
  case "$1" in
    --profile) profile="${2:?--profile needs release or dev}"; shift 2 ;;
    --cuda) cuda=true; shift ;;
    --cuda-only) cuda=true; cpu=false; shift ;;
    *) echo "usage: scripts/images/build.sh [--profile release|dev] [--cuda] [--cuda-only]" >&2; exit 2 ;;
  esac
done
[[ $profile == release || $profile == dev ]] || { echo "--profile is release or dev" >&2; exit 2; }
log() { printf '[images] %s\n' "$*" >&2; }
for tool in podman mmdebstrap objcopy; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh --with-images"; exit 1; }
done
[[ -f "$cache/env.sh" ]] || { log "$cache/env.sh is missing: run scripts/setup.sh first"; exit 1; }
source "$cache/env.sh"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
# The dev profile's images beside the release ones, never in their place.
tag_suffix=""
[[ $profile == dev ]] && tag_suffix="-dev"
oci="$cache/oci"
mkdir -p "$oci"
# One build at a time on a cache: two would stage, hash and save into the same places.
exec 9>"$oci/.build.lock"
flock 9
hash_of() { sha256sum | cut -c1-64; }

# --- the base root filesystem ---------------------------------------------------------
# Everything that defines it is hashed into its tag: change a package or the hook and a
# new base (and so new images) follows.
# zlib: cuDNN 9 links it.
base_packages="libc6,libgcc-s1,libstdc++6,zlib1g,ca-certificates"
base_mirrors=("deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main")
# extract: the packages' files without running their scripts (nothing here needs them),
# then (an extract hook: the extract variant runs no customize hooks) the CA bundle
# update-ca-certificates would have written, a passwd entry for the non-root user, a
# /tmp, a /models the non-root user owns (a runtime that copies a mount point's owner into
# a fresh volume, as podman does for an emptyDir, then lets it write there; Kubernetes'
# emptyDir is writable by anyone anyway), and no documentation.
base_hook='set -e; r="$1"
mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/models"; chmod 1777 "$r/tmp"; chown 65532:65532 "$r/models"
cat "$r"/usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" >"$r/etc/passwd"
printf "root:x:0:\nnonroot:x:65532:\n" >"$r/etc/group"
rm -rf "$r"/usr/share/doc "$r"/usr/share/man "$r"/usr/share/info "$r"/usr/share/lintian "$r"/usr/share/locale
rm -rf "$r"/var/cache/apt "$r"/var/lib/apt/lists'
base_tag=$(printf '%s\n' "variant=extract extract-hook" "$base_packages" "${base_mirrors[@]}" "$base_hook" | hash_of | cut -c1-16)
base="localhost/matte-base:$base_tag"
if ! podman image exists "$base"; then
  base_tar="$oci/base-$base_tag.tar"
  if [[ ! -f "$base_tar" ]]; then
    log "unpacking the base root filesystem (Debian bookworm: $base_packages)"
    mmdebstrap --quiet --variant=extract --format=tar --include="$base_packages" \
      --extract-hook="$base_hook" bookworm "$base_tar.partial" "${base_mirrors[@]}"
    mv "$base_tar.partial" "$base_tar"
  fi
  podman import --quiet "$base_tar" "$base" >/dev/null
fi
# The base's contents, not its image ID: `podman import` stamps the time into that, so an
# import of the same root filesystem (podman's store lost, the archives kept) would
# change every image's inputs and rebuild them all.
base_layer=$(podman image inspect --format '{{index .RootFS.Layers 0}}' "$base")

# --- the binaries ------------------------------------------------------------------------
cargo_profile=(--release)
profile_dir=release
if [[ $profile == dev ]]; then cargo_profile=(); profile_dir=debug; fi
target_dir="${CARGO_TARGET_DIR:-$root/target}"
log "building matte-operator, matte-gateway and matte-inference ($profile profile)"
(cd "$root" && cargo build --quiet --locked "${cargo_profile[@]}" \
  -p matte-operator --bin matte-operator -p matte-gateway --bin matte-gateway \
  -p matte-inference --bin matte-inference)
bin_dir="$target_dir/$profile_dir"

# --- one image: stage the context, hash it, build unless an image of that hash exists -
# build_image NAME TAG CONTAINERFILE CONTEXT [--build-arg …]
build_image() {
  local name=$1 tag=$2 containerfile=$3 context=$4
  shift 4
  local image="localhost/$name:$tag" archive="$oci/$name-$tag.oci.tar" inputs
  inputs=$( {
    echo "$base_layer" "$*"
    sha256sum "$containerfile" | cut -c1-64
    (cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
  } | hash_of)
  local current
  current=$(podman image inspect --format '{{index .Config.Labels "dev.matte.inputs"}}' "$image" 2>/dev/null || true)
  if [[ $current == "$inputs" ]]; then
    log "$image is up to date"
  elif [[ -f "$archive" && $(cat "$archive.inputs" 2>/dev/null) == "$inputs" ]]; then
    log "loading $image from $archive"
    podman load --quiet --input "$archive" >/dev/null
  else
    log "building $image"
    podman build --quiet --pull=never --layers=false --build-arg BASE="$base" "$@" \
      --label "dev.matte.inputs=$inputs" --label "org.opencontainers.image.version=$version" \
      -f "$containerfile" -t "$image" "$context" >/dev/null
  fi
  # The image the tag named before is left nameless by a new one: remove such leftovers
  # of Matte's builds, or every rebuild (each test run after a change) leaves 40-70 MB in
  # podman's store until the disk fills. One a container still runs from stays until a
  # later build.
  podman image prune --force --filter label=dev.matte.inputs >/dev/null \
    || log "could not remove the images earlier builds left nameless (podman image prune); going on"
  if [[ $(cat "$archive.inputs" 2>/dev/null) != "$inputs" ]]; then
    rm -f "$archive"
    podman save --quiet --format oci-archive -o "$archive.partial" "$image"
    mv "$archive.partial" "$archive"
    echo "$inputs" >"$archive.inputs"
  fi
  log "$image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), $archive"
}

# Copies a binary without its debug info (kept in target/ for debugging).
stage_binary() { objcopy --strip-debug "$1" "$2"; }

# --- matte-operator ------------------------------------------------------------------
if $cpu; then
  context="$oci/context/operator"
  rm -rf "$context" && mkdir -p "$context"
  stage_binary "$bin_dir/matte-operator" "$context/matte-operator"
  build_image matte-operator "$version$tag_suffix" "$here/operator.Containerfile" "$context"
fi

# --- matte-gateway -------------------------------------------------------------------
if $cpu; then
  context="$oci/context/gateway"
  rm -rf "$context" && mkdir -p "$context"
  stage_binary "$bin_dir/matte-gateway" "$context/matte-gateway"
  build_image matte-gateway "$version$tag_suffix" "$here/gateway.Containerfile" "$context"
fi

# --- matte-inference (CPU) ---------------------------------------------------------------
ort_lib_name="libonnxruntime.so.$ONNXRUNTIME_VERSION"
if $cpu; then
  context="$oci/context/inference"
  rm -rf "$context" && mkdir -p "$context/bin" "$context/lib"
  stage_binary "$bin_dir/matte-inference" "$context/bin/matte-inference"
  [[ $(basename "$ORT_DYLIB_PATH") == "$ort_lib_name" ]] \
    || { log "ORT_DYLIB_PATH is $ORT_DYLIB_PATH, not onnxruntime $ONNXRUNTIME_VERSION: rerun scripts/setup.sh"; exit 1; }
  cp "$ORT_DYLIB_PATH" "$context/lib/"
  build_image matte-inference "$version$tag_suffix" "$here/inference.Containerfile" "$context" \
    --build-arg ONNXRUNTIME_VERSION="$ONNXRUNTIME_VERSION" --build-arg PROVIDER=cpu
fi

# --- matte-inference (CUDA) --------------------------------------------------------------
if $cuda; then
  # onnxruntime-gpu is built for CUDA 13 and cuDNN 9; these wheels carry what its CUDA
  # provider needs (versions in scripts/versions.env).
  cuda_wheels=("onnxruntime-gpu==$ONNXRUNTIME_VERSION" "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION"
    "nvidia-cuda-nvrtc==$CUDA_NVRTC_VERSION" "nvidia-cublas==$CUBLAS_VERSION" "nvidia-cufft==$CUFFT_VERSION"
    "nvidia-curand==$CURAND_VERSION" "nvidia-cudnn-cu13==$CUDNN_VERSION")
  context="$oci/context/inference-cuda"
  rm -rf "$context" && mkdir -p "$context/bin" "$context/lib"
  stage_binary "$bin_dir/matte-inference" "$context/bin/matte-inference"
  # The shared libraries of each wheel, flattened into one directory on the library path.
  bash "$root/scripts/wheel_libs.sh" "$context/lib" "${cuda_wheels[@]}"
  build_image matte-inference "$version-cuda$tag_suffix" "$here/inference.Containerfile" "$context" \
    --build-arg ONNXRUNTIME_VERSION="$ONNXRUNTIME_VERSION" --build-arg PROVIDER=cuda
fi

# --- the CUDA image's check: its libraries resolve, and without a GPU the provider fails
# for want of the device (or its driver), not for a missing library -----------------------
if $cuda; then
  image="localhost/matte-inference:$version-cuda$tag_suffix"
  loader=(podman run --rm --network none --entrypoint /lib64/ld-linux-x86-64.so.2 "$image" --list)
  unresolved=""
  for lib in "$context"/lib/*.so*; do
    name=$(basename "$lib")
    # TensorRT's provider needs TensorRT itself, which this image does not carry.
    [[ $name == libonnxruntime_providers_tensorrt.so ]] && continue
    # libcuda.so.1 is the driver's: the NVIDIA container runtime mounts it from the host.
    # ld.so reports a missing library as "not found", or on stderr when a direct one is.
    missing=$("${loader[@]}" "/opt/onnxruntime/lib/$name" 2>&1 \
      | grep -E 'not found|cannot open shared object' | grep -v 'libcuda\.so\.1' || true)
    [[ -n $missing ]] && unresolved+="$name:"$'\n'"$missing"$'\n'
  done
  if [[ -n $unresolved ]]; then
    log "libraries in $image that do not resolve:"$'\n'"$unresolved"
    exit 1
  fi
  log "every library in $image resolves (ld.so --list, libcuda.so.1 from the host's driver aside)"
  set +e
  registration=$(podman run --rm --network none --read-only --user 65532:65532 --cap-drop ALL \
    --volume "$MATTE_MODEL:/models/model.onnx:ro" "$image" --model /models/model.onnx --provider cuda 2>&1)
  status=$?
  set -e
  reason=$(grep -o 'execution provider `cuda`.*' <<<"$registration" | tail -1 || true)
  # Without a GPU the only thing missing is the driver (libcuda.so.1, which the NVIDIA
  # container runtime mounts) or the device itself; any other library is a defect.
  other=$(grep -o '[A-Za-z0-9_.+-]*\.so[.0-9]*: cannot open shared object' <<<"$registration" | grep -v '^libcuda\.so\.1:' || true)
  if [[ $status -eq 0 || -z $reason || -n $other ]]; then
    log "the CUDA provider did not fail as expected without a GPU (exit $status):"$'\n'"$registration"
    exit 1
  fi
  log "without a GPU the CUDA provider fails for want of the driver or device only: $reason"
fi
