#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, with fake GPU nodes, for the end-to-end tests
# (tests/, crate matte-e2e) and for trying the operator by hand. No container runtime:
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real thing, and
# kwok plays the kubelet of every node, so a Pod bound to a node turns Running and Ready
# (with a fake IP) without any container being started.
#
#   scripts/cluster/up.sh [--gpu-nodes N] [--state-dir DIR]
#
#   --gpu-nodes N    fake nodes to create (default $MATTE_GPU_NODES or 2; 0 is allowed),
#                    each with capacity nvidia.com/gpu: 1, cpu 32, memory 256Gi, pods 110, so
#                    the scheduler places one GPU pod per node and leaves the rest Pending
#   --state-dir DIR  where certificates, data, kubeconfig and logs go; must not exist yet
#                    (default: a fresh directory under $TMPDIR)
#
# Every port is picked freshly on 127.0.0.1, so several clusters can run side by side. Once
# the cluster is usable it writes DIR/env (KUBECONFIG, MATTE_CLUSTER_SERVER, …, in shell
# syntax), prints it, and creates DIR/ready. It then stays in the foreground until its stdin
# is closed (Ctrl-D, or the process holding the pipe dies) or it gets SIGTERM/SIGINT, and
# tears everything down: every process it started is stopped and DIR removed. SIGUSR1
# restarts the apiserver (see "apiserver restarts" below). If it fails to come up, it says
# which component and tails its log, and leaves DIR for inspection.
#
# The binaries come from scripts/cluster/build.sh (run by scripts/setup.sh --with-cluster).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${MATTE_CACHE:-$HOME/.cache/matte}/k8s/bin"
log() { printf '[cluster] %s\n' "$*" >&2; }

gpu_nodes="${MATTE_GPU_NODES:-2}"
state=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu-nodes) gpu_nodes="$2"; shift 2 ;;
    --state-dir) state="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done
[[ "$gpu_nodes" =~ ^[0-9]+$ ]] || { log "--gpu-nodes must be a number, got '$gpu_nodes'"; exit 2; }
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [[ -x "$bin/$b" ]] || { log "$bin/$b is missing: run scripts/setup.sh --with-cluster (or scripts/cluster/build.sh)"; exit 1; }
done
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || { log "$tool is required (scripts/setup.sh --with-cluster installs openssl)"; exit 1; }
done

if [[ -z "$state" ]]; then
  state=$(mktemp -d "${TMPDIR:-/tmp}/matte-cluster.XXXXXX")
else
  mkdir "$state" # fails if it exists: never wipe a directory we did not create
fi
state=$(cd "$state" && pwd)
mkdir -p "$state"/{pki,logs,etcd}

# --- lifecycle -----------------------------------------------------------------------
pids=()   # every process we started, in start order
names=()  # and its name, for messages
ok=false  # becomes true once the cluster is up; a failure before leaves $state behind

teardown() {
  # a second Ctrl-C or SIGTERM must not cut the cleanup short
  trap '' INT TERM
  trap - EXIT
  local i
  # stop in reverse order (kwok and the controllers before the apiserver, etcd last), so
  # nothing spends its last seconds logging that the apiserver went away
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 10))
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "${pids[i]}" 2>/dev/null || true
  done
  # Not a bare `wait`: it would wait for the reader of stdin too, which outlives a Ctrl-C
  # for as long as the terminal stays open.
  [[ -z ${stdin_pid:-} ]] || kill "$stdin_pid" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if $ok; then
    rm -rf "$state"
  else
    log "left $state for inspection (logs in $state/logs)"
  fi
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { # component message: the message, the tail of the component's log, then exit
  log "$2"
  if [[ -f "$state/logs/$1.log" ]]; then
    log "last lines of $state/logs/$1.log:"
    tail -n 30 "$state/logs/$1.log" >&2
  fi
  exit 1
}

# Starts a component in the background with its output in logs/NAME.log. setpriv's
# --pdeathsig makes the kernel kill it if this script dies without tearing down (SIGKILL).
pdeathsig=()
if setpriv --pdeathsig KILL true 2>/dev/null; then pdeathsig=(setpriv --pdeathsig KILL --); fi
start() { # name command...
  local name="$1"; shift
  "${pdeathsig[@]}" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  pids+=("$!")
  names+=("$name")
}

# Polls `check` (a command) every 0.2 s until it succeeds; past the deadline, fails naming
# what it waited for, with the log of the component responsible. Also fails at once if a
# component we started has already exited.
wait_until() { # seconds component description check...
  local seconds="$1" component="$2" what="$3"; shift 3
  local deadline=$((SECONDS + seconds)) i
  until "$@" >/dev/null 2>&1; do
    for i in "${!pids[@]}"; do
      kill -0 "${pids[i]}" 2>/dev/null || fail "${names[i]}" "${names[i]} exited while waiting for $what"
    done
    ((SECONDS < deadline)) || fail "$component" "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

# --- certificates and keys -------------------------------------------------------------
# One CA signs the apiserver's serving certificate and every client certificate; clients
# authenticate with a certificate (CN = user, O = groups). ECDSA P-256 keys: instant to
# generate. The service-account key pair signs ServiceAccount tokens (the apiserver for
# TokenRequest / `kubectl create token`, the controller manager for its controllers' own
# credentials).
pki="$state/pki"
ossl() { openssl "$@" >>"$state/logs/openssl.log" 2>&1 || fail openssl "openssl $1 failed"; }
ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ec_key "$pki/ca.key"
ossl req -x509 -new -key "$pki/ca.key" -sha256 -days 7 -subj "/CN=matte-test-ca" -out "$pki/ca.crt"
cert() { # name subject extensions
  ec_key "$pki/$1.key"
  ossl req -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr"
  printf '%s\n' "$3" >"$pki/$1.ext"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -sha256 -days 7 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=matte-admin" "$client_ext"
cert controller-manager "/CN=system:kube-controller-manager" "$client_ext"
cert scheduler "/CN=system:kube-scheduler" "$client_ext"
# kwok writes the status of nodes and of every pod on them, which the Node authorizer
# would only allow per node; it runs as an administrator instead.
cert kwok "/O=system:masters/CN=kwok" "$client_ext"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# --- ports -----------------------------------------------------------------------------
# Free loopback ports below the kernel's ephemeral range, rather than the well-known ones, so
# two clusters never collide. Not bind(0): that hands out a port from the ephemeral range,
# where outgoing connections take their source ports too, and one can take the port in the
# moment between finding it free and etcd or the apiserver binding it. Each port is checked
# free here; the starting point is random so clusters starting at once do not pick alike.
# The test crates find theirs the same way (tests/src/ports.rs) below the lowest port they
# hand this script in MATTE_CLUSTER_LOWEST_PORT, so that a cluster starting never takes a
# port a test has found free for a server that has yet to bind it. Two clusters starting
# at once could still each find a port free before either binds it (an apiserver failed
# so, its port taken by the other cluster's etcd): one cluster at a time picks its ports
# and binds them, holding a lock until its apiserver listens. The components inherit the
# lock's descriptor; `flock -u` releases it for all, and they die with this script.
exec {ports_lock_fd}>>"${TMPDIR:-/tmp}/matte-cluster-ports.lock"
flock "$ports_lock_fd"
read -r etcd_port etcd_peer_port api_port < <(python3 -c '
import os, random, socket
LOWEST = int(os.environ.get("MATTE_CLUSTER_LOWEST_PORT", "20000"))
try:
    start = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    start = 32768
if start < LOWEST + 4096:
    start = 32768
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
first = random.randrange(LOWEST, start)
ports = []
for step in range(start - LOWEST):
    port = LOWEST + (first - LOWEST + step) % (start - LOWEST)
    if free(port):
        ports.append(port)
        if len(ports) == 3:
            break
if len(ports) < 3:
    raise SystemExit("no three free loopback ports between %d and %d" % (LOWEST, start))
print(*ports)')
server="https://127.0.0.1:$api_port"

# Self-contained kubeconfigs (certificates inline), so they can be copied or rewritten
# (say, for a ServiceAccount token) without the files in pki/.
b64() { base64 -w0 <"$1"; }
kubeconfig() { # name → writes $state/NAME.kubeconfig using pki/NAME.{crt,key}
  cat >"$state/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: matte-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(b64 "$pki/$1.crt")
    client-key-data: $(b64 "$pki/$1.key")
contexts:
- name: matte-test
  context: {cluster: matte-test, user: $1}
current-context: matte-test
EOF
}
for who in admin controller-manager scheduler kwok; do kubeconfig "$who"; done
kubectl() { "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" --cache-dir "$state/kube-cache" "$@"; }

# --- etcd ------------------------------------------------------------------------------
# Plain HTTP on loopback only. --unsafe-no-fsync: the data dies with the cluster anyway,
# and fsync is most of etcd's latency on a busy disk.
start etcd "$bin/etcd" --name matte-test --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "matte-test=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --log-level warn
wait_until 30 etcd "etcd to be healthy" curl -fsS "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver --------------------------------------------------------------------
# Secure port only, on 127.0.0.1. Authentication: client certificates (the CA above) and
# ServiceAccount tokens; authorization: Node + RBAC, as on a real cluster, so RBAC mistakes
# in the chart show up here. --endpoint-reconciler-type=none: the `kubernetes` Service may
# not point at a loopback address, and nothing in the tests goes through it.
start_apiserver() {
  start kube-apiserver "$bin/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none \
    --allow-privileged=true --profiling=false
}
start_apiserver
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$api_port"); }
wait_until 60 kube-apiserver "kube-apiserver to listen on $api_port" listening
flock -u "$ports_lock_fd"
exec {ports_lock_fd}>&-
readyz() { curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz"; }
wait_until 90 kube-apiserver "kube-apiserver's /readyz" readyz

# --- kube-controller-manager and kube-scheduler ------------------------------------------
# --secure-port 0: their own HTTPS endpoints (health, metrics) are not needed and would take
# fixed ports. --use-service-account-credentials: each controller acts as its own
# ServiceAccount, as in production, with tokens signed by sa.key. No cloud provider, and no
# node IPAM (--allocate-node-cidrs is off): kwok hands out pod IPs itself.
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$state/controller-manager.kubeconfig" \
  --secure-port 0 --leader-elect=false \
  --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*' --enable-garbage-collector=true \
  --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$state/scheduler.kubeconfig" \
  --secure-port 0 --leader-elect=false --profiling=false

# --- kwok ------------------------------------------------------------------------------
# Manages the nodes annotated kwok.x-k8s.io/node=fake, with the stages of kwok.yaml (see
# there). No --node-port/--server-address: its kubelet-like server (logs, exec) is not used
# and would need a fixed port.
start kwok "$bin/kwok" --kubeconfig "$state/kwok.kubeconfig" --config "$here/kwok.yaml"

# --- apiserver restarts, on SIGUSR1 -------------------------------------------------------
# For the tests of what survives one: the apiserver is stopped, kept down for
# $MATTE_APISERVER_DOWNTIME seconds (default 3), and started again on the same port, with the
# same certificates and etcd. DIR/apiserver-restarts counts the restarts completed, written
# once the new apiserver is ready again.
restarts=0
restart_apiserver() {
  local i
  for i in "${!names[@]}"; do [[ ${names[i]} == kube-apiserver ]] && break; done
  log "restarting kube-apiserver"
  # SIGTERM, as on an upgrade; but a graceful apiserver waits up to a minute for open
  # watches to end, so after 5 s it is killed, as in a crash
  kill -TERM "${pids[i]}" 2>/dev/null || true
  local deadline=$((SECONDS + 5))
  while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "${pids[i]}" 2>/dev/null || true
  wait "${pids[i]}" 2>/dev/null || true
  mv "$state/logs/kube-apiserver.log" "$state/logs/kube-apiserver.$restarts.log"
  unset 'pids[i]' 'names[i]'
  pids=("${pids[@]}")
  names=("${names[@]}")
  sleep "${MATTE_APISERVER_DOWNTIME:-3}"
  start_apiserver
  wait_until 90 kube-apiserver "kube-apiserver's /readyz after a restart" readyz
  restarts=$((restarts + 1))
  echo "$restarts" >"$state/apiserver-restarts"
  log "kube-apiserver is back (restart $restarts)"
}

# --- the fake GPU nodes ----------------------------------------------------------------
# Capacity, allocatable and a (fake) address are given in the status at creation; kwok's
# node-initialize stage keeps them and only adds the conditions and node info.
if ((gpu_nodes > 0)); then
  for ((i = 0; i < gpu_nodes; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: matte-gpu-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: matte-gpu-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    nvidia.com/gpu.present: "true"
status:
  addresses:
  - {type: InternalIP, address: 10.255.$((i / 250)).$((i % 250 + 1))}
  - {type: Hostname, address: matte-gpu-$i}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "1"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "1"}
EOF
  done >"$state/nodes.yaml"
  kubectl create -f "$state/nodes.yaml" >>"$state/logs/kubectl.log" 2>&1 \
    || fail kubectl "could not create the nodes"
  nodes_ready() {
    [[ $(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
      | grep -c '^True$') -eq $gpu_nodes ]]
  }
  wait_until 60 kwok "$gpu_nodes node(s) to become Ready" nodes_ready
fi

# Pods can only be created once the namespace's default ServiceAccount exists (made by the
# controller manager's serviceaccount controller).
wait_until 60 kube-controller-manager 'the ServiceAccount "default" in namespace "default"' \
  kubectl get serviceaccount default --namespace default

# --- ready -----------------------------------------------------------------------------
cat >"$state/env" <<EOF
export KUBECONFIG=$state/admin.kubeconfig
export KUBECACHEDIR=$state/kube-cache
export MATTE_CLUSTER_SERVER=$server
export MATTE_CLUSTER_STATE=$state
export MATTE_CLUSTER_BIN=$bin
EOF
ok=true
touch "$state/ready"
cat "$state/env"
log "ready in ${SECONDS}s: source $state/env (close stdin or send SIGTERM to stop)"

# Wait for stdin to close, a signal (the traps exit, which runs teardown), or a component
# to die (then the cluster is no longer what the caller thinks it is: stop everything).
# (<&0 explicitly: bash gives background commands /dev/null as stdin otherwise)
cat <&0 >/dev/null &
stdin_pid=$!
restart_requested=false
trap 'restart_requested=true' USR1
while true; do
  set +e
  wait -n "$stdin_pid" "${pids[@]}"
  set -e
  # a trapped signal interrupts `wait` (after its trap has run): restart, then wait again
  if $restart_requested; then
    restart_requested=false
    restart_apiserver
    continue
  fi
  break
done
if kill -0 "$stdin_pid" 2>/dev/null; then
  kill "$stdin_pid" 2>/dev/null || true
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
      ok=false
      fail "${names[i]}" "${names[i]} exited unexpectedly; stopping the cluster"
    fi
  done
fi
exit 0
