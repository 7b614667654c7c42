#!/usr/bin/env bash
# Proves that each real part that scripts/real-parts builds starts: etcd and kube-apiserver on
# loopback (client certificates, RBAC, a service-account signing key), capms's CRDs applied to it
# server-side, and clusterctl and Cluster API's managers answering --help / version. Everything
# lives in one temporary folder and every process it starts is stopped on exit, whatever happens.
#
#     realcluster/smoke.sh            # builds the parts first if the cache lacks them
#     CAPMS_REAL_BIN=DIR realcluster/smoke.sh   # uses the binaries in DIR
#
# Prints how long the apiserver took to become ready (/readyz). Exits non-zero on any failure,
# printing the tail of the failing process's log.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ready_timeout=${CAPMS_SMOKE_READY_TIMEOUT:-60}

say() { echo "smoke: $*" >&2; }

bin=${CAPMS_REAL_BIN:-}
if [ -z "$bin" ]; then
    bin=$("$repo/scripts/real-parts" | tail -1)
fi
for b in etcd kube-apiserver capi-manager clusterctl kubeadm-bootstrap-manager kubeadm-control-plane-manager; do
    [ -x "$bin/$b" ] || { say "ERROR: $bin/$b missing"; exit 1; }
done
kubectl=${KUBECTL:-$(command -v kubectl || true)}
[ -n "$kubectl" ] || { say "ERROR: kubectl not found"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/capms-smoke.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    local pid
    # Stop in reverse start order: apiserver before etcd.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "process $pid ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ $rc -ne 0 ] && [ -n "${CAPMS_SMOKE_KEEP:-}" ]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    say "ERROR: $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        say "last lines of $(basename "$2"):"
        tail -n 30 "$2" >&2
    fi
    exit 1
}

# Three free loopback ports, from the kernel.
read -r etcd_client etcd_peer api_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')

# --- certificates and keys ---------------------------------------------------------------
pki=$work/pki
mkdir -p "$pki"
ssl() { openssl "$@" 2>>"$work/openssl.log" || fail "openssl $1 failed" "$work/openssl.log"; }
ssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=capms-smoke-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$pki/ca.key" -out "$pki/ca.crt"
# sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the CA.
sign() {
    ssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
    printf '%s\n' "$3" >"$pki/$1.ext"
    ssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 1 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
sign apiserver /CN=kube-apiserver "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin "/O=system:masters/CN=capms-smoke-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
ssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig=$work/kubeconfig
{
    "$kubectl" config --kubeconfig "$kubeconfig" set-cluster smoke --server "https://127.0.0.1:$api_port" \
        --certificate-authority "$pki/ca.crt" --embed-certs
    "$kubectl" config --kubeconfig "$kubeconfig" set-credentials admin \
        --client-certificate "$pki/admin.crt" --client-key "$pki/admin.key" --embed-certs
    "$kubectl" config --kubeconfig "$kubeconfig" set-context smoke --cluster smoke --user admin
    "$kubectl" config --kubeconfig "$kubeconfig" use-context smoke
} >/dev/null

# --- etcd ----------------------------------------------------------------------------------
say "etcd on 127.0.0.1:$etcd_client"
"$bin/etcd" --data-dir "$work/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    >"$work/etcd.out" 2>"$work/etcd.log" &
pids+=($!)
deadline=$((SECONDS + 30))
until grep -qx ready "$work/etcd.out"; do
    kill -0 "${pids[0]}" 2>/dev/null || fail "etcd exited" "$work/etcd.log"
    [ $SECONDS -lt $deadline ] || fail "etcd not ready within 30 s" "$work/etcd.log"
    sleep 0.1
done

# --- kube-apiserver ------------------------------------------------------------------------
say "kube-apiserver on 127.0.0.1:$api_port"
api_start=$(date +%s%N)
"$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_client" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$work/apiserver-certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged \
    --endpoint-reconciler-type none \
    >"$work/kube-apiserver.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
deadline=$((SECONDS + ready_timeout))
until curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; do
    kill -0 "$api_pid" 2>/dev/null || fail "kube-apiserver exited" "$work/kube-apiserver.log"
    [ $SECONDS -lt $deadline ] || fail "kube-apiserver not ready within $ready_timeout s" "$work/kube-apiserver.log"
    sleep 0.2
done
api_ready_ms=$((($(date +%s%N) - api_start) / 1000000))
say "kube-apiserver ready (/readyz) in ${api_ready_ms} ms"

k() { "$kubectl" --kubeconfig "$kubeconfig" --request-timeout 30s "$@"; }
server_version=$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
say "server version $server_version"
case $server_version in v1.*) ;; *) fail "kube-apiserver reports version '$server_version', not a release" ;; esac
k auth can-i '*' '*' --all-namespaces >/dev/null || fail "the admin client certificate is not cluster-admin"

say "kubectl apply --server-side -k config/crd"
k apply --server-side -k "$repo/config/crd" >&2 || fail "capms's CRDs were not accepted"
k wait --for condition=Established --timeout 30s -f <(k kustomize "$repo/config/crd") >&2 ||
    fail "capms's CRDs did not become Established"
k get crds >&2

# --- Cluster API's binaries ---------------------------------------------------------------
export CLUSTERCTL_DISABLE_VERSIONCHECK=true # it would ask GitHub for newer releases
export XDG_CONFIG_HOME=$work/xdg HOME=$work/home
mkdir -p "$HOME"
say "clusterctl version: $("$bin/clusterctl" version -o short 2>&1)"
"$bin/clusterctl" version >"$work/clusterctl.log" 2>&1 || fail "clusterctl version failed" "$work/clusterctl.log"
for m in capi-manager kubeadm-bootstrap-manager kubeadm-control-plane-manager; do
    "$bin/$m" --help >"$work/$m.log" 2>&1 || fail "$m --help failed" "$work/$m.log"
    grep -q -- --leader-elect "$work/$m.log" || fail "$m --help printed no manager flags" "$work/$m.log"
    say "$m --help: ok"
done
"$bin/etcd" --help >"$work/etcd-help.log" 2>&1 || true
grep -q -- -data-dir "$work/etcd-help.log" || fail "etcd --help printed no flags" "$work/etcd-help.log"

say "ok: etcd, kube-apiserver ($server_version, ready in ${api_ready_ms} ms), CRDs applied, clusterctl and the managers run"
