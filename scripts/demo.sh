#!/usr/bin/env bash
# The main job on an embedded default, with no cluster and no GPU: fetch the runtime and
# model (cached), start matte-inference on the CPU, remove the background of a sample
# photograph, and write the cut-out to out/astronaut-cutout.png. Pass another image
# path to process that instead.
set -euo pipefail
# The image's path as given, from where the script was started.
if (($#)); then
  given=$(realpath -e -- "$1") || { echo "no such image: $1" >&2; exit 1; }
  set -- "$given"
fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"
input="${1:-$MATTE_SAMPLE_IMAGES/astronaut.png}"
output="out/$(basename "${input%.*}")-cutout.png"
mkdir -p out

cargo build --release --locked -p matte-inference
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No Service routes to this server, so on exit it has no endpoints to wait for.
./target/release/matte-inference --model "$MATTE_MODEL" --provider cpu \
  --listen "127.0.0.1:$port" --log-format text --drain-delay-seconds 0 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT

ready=false
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && { ready=true; break; }
  kill -0 $server 2>/dev/null || { echo "matte-inference exited during start-up" >&2; exit 1; }
  sleep 0.2
done
$ready || { echo "matte-inference was not ready within 120 s" >&2; exit 1; }
case "$input" in
  *.jpg|*.jpeg|*.JPG|*.JPEG) type=image/jpeg ;;
  *.webp) type=image/webp ;;
  *) type=image/png ;;
esac
curl -sS --fail-with-body -D out/response-headers.txt -o "$output" \
  -H "content-type: $type" --data-binary "@$input" "http://127.0.0.1:$port/v1/remove"
echo
grep -i '^x-matte' out/response-headers.txt
echo "wrote $output"
