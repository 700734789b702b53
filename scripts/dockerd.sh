#!/usr/bin/env bash
# Start the project's own Docker daemon (idempotent), then print DOCKER_HOST=... on the last line.
#
# The daemon is separate from any system dockerd: its own socket, data root, exec root, pid file,
# bridge interface and address pool, so tests and the validator never touch the operator's containers.
#
# Environment (all optional):
#   VV_DOCKER_DIR             state directory (default /var/lib/voice-validator/docker)
#   VV_DOCKER_EXEC_ROOT       exec root (default $VV_DOCKER_DIR/exec, or /run/vv-docker when that path
#                             is too long for the unix sockets containerd creates beneath it)
#   VV_DOCKER_BRIDGE          bridge interface for the default network (default vvdocker0)
#   VV_DOCKER_BIP             address of that bridge (default 10.212.0.1/24)
#   VV_DOCKER_POOL            address pool for user-defined networks (default 10.213.0.0/16, /24 each)
#   VV_DOCKER_BUILD_POOL      address pool of the validator's per-build networks (default 10.214.0.0/16;
#                             the validator's build-subnet-pool setting must match)
#   VV_BUILD_PROXY_PORT       TCP port of the validator's build egress proxy (default 3199; its
#                             build-proxy-port setting must match)
#   VV_DOCKER_STORAGE_DRIVER  force a storage driver (default: dockerd's choice, vfs as a fallback)
#   VV_DOCKER_GUARD_HOST      1 (default): drop new connections from our containers to the host, and
#                             reject whatever build networks would route elsewhere
#   VV_DOCKER_START_TIMEOUT   seconds to wait for the daemon to answer (default 60)
#
# Must run as root (dockerd needs it).
set -euo pipefail

VV_DOCKER_DIR="${VV_DOCKER_DIR:-/var/lib/voice-validator/docker}"
BRIDGE="${VV_DOCKER_BRIDGE:-vvdocker0}"
BIP="${VV_DOCKER_BIP:-10.212.0.1/24}"
POOL="${VV_DOCKER_POOL:-10.213.0.0/16}"
BUILD_POOL="${VV_DOCKER_BUILD_POOL:-10.214.0.0/16}"
PROXY_PORT="${VV_BUILD_PROXY_PORT:-3199}"
GUARD_HOST="${VV_DOCKER_GUARD_HOST:-1}"
START_TIMEOUT="${VV_DOCKER_START_TIMEOUT:-60}"
SOCK="$VV_DOCKER_DIR/docker.sock"
HOST="unix://$SOCK"
PIDFILE="$VV_DOCKER_DIR/dockerd.pid"
LOG="$VV_DOCKER_DIR/dockerd.log"

if [[ -n "${VV_DOCKER_EXEC_ROOT:-}" ]]; then
    EXEC_ROOT="$VV_DOCKER_EXEC_ROOT"
elif (( ${#VV_DOCKER_DIR} <= 40 )); then
    EXEC_ROOT="$VV_DOCKER_DIR/exec"
else
    # containerd puts sockets under the exec root and unix socket paths are limited to 108 bytes.
    EXEC_ROOT="/run/vv-docker"
fi

log() { echo "dockerd.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

answering() {
    timeout 10 docker -H "$HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Internal networks stop traffic that leaves their subnet (dockerd's FORWARD rules), yet containers get
# a default route via the bridge gateway, which is the host itself: any host service listening on a
# non-loopback address (0.0.0.0, eth0, a dummy interface) would be reachable from a miner. Drop new
# connections from our containers to the host; replies to connections the host opened (health checks,
# inference requests) still pass. Build containers (default bridge) keep DNS to a resolver on the host.
guard_rule() {
    local chain_op="$1"; shift
    iptables -C "$@" 2>/dev/null || iptables "$chain_op" "$@"
}
ensure_host_guard() {
    [[ "$GUARD_HOST" == 1 ]] || return 0
    for subnet in "$POOL" "$BIP"; do
        guard_rule -I INPUT -s "$subnet" ! -i lo -m conntrack --ctstate NEW,INVALID -j DROP \
            || log "warning: could not add the host guard rule for $subnet (iptables)"
    done
    for proto in udp tcp; do
        # Inserted after the drop rules so that it lands above them.
        guard_rule -I INPUT -s "$BIP" -p "$proto" --dport 53 -j ACCEPT \
            || log "warning: could not add the DNS exception for $BIP"
    done
    ensure_build_guard
}

# Build networks (the validator's build-network proxy) may open exactly one kind of connection to the
# host: TCP to the egress proxy's port on a build network's gateway. Every rule is a drop on its own
# disjoint condition (plus one accept for hosts whose INPUT policy is DROP), so their order does not
# matter and re-running this script after an upgrade cannot put one above another the wrong way.
ensure_build_guard() {
    local rules=(
        "-s $BUILD_POOL ! -i lo -p tcp ! --dport $PROXY_PORT -m conntrack --ctstate NEW,INVALID -j DROP"
        "-s $BUILD_POOL ! -i lo ! -p tcp -m conntrack --ctstate NEW,INVALID -j DROP"
        "-s $BUILD_POOL ! -d $BUILD_POOL ! -i lo -p tcp --dport $PROXY_PORT -j DROP"
        "! -s $BUILD_POOL ! -i lo -p tcp --dport $PROXY_PORT -j DROP"
        "-s $BUILD_POOL -d $BUILD_POOL -p tcp --dport $PROXY_PORT -j ACCEPT"
    )
    local rule
    for rule in "${rules[@]}"; do
        # shellcheck disable=SC2086  # each rule is a list of iptables words
        guard_rule -I INPUT $rule || log "warning: could not add the build guard rule: $rule"
    done
    # Build steps have a default route via their gateway, the host, and Docker's isolation rules drop
    # what they send elsewhere silently; rejecting it makes a connect fail at once instead of hanging.
    guard_rule -I DOCKER-USER -s "$BUILD_POOL" -j REJECT --reject-with icmp-net-unreachable \
        || log "warning: could not add the forward reject rule for $BUILD_POOL (no DOCKER-USER chain?)"
}

# Each run's network gets a /24 route of its own; once the network is removed, a request to a stale
# container address would follow the default route out of the machine. The blackhole route for the
# whole pool makes such requests fail at once instead (longer per-network prefixes still win).
ensure_pool_blackhole() {
    for pool in "$POOL" "$BUILD_POOL"; do
        ip route replace blackhole "$pool" || log "warning: could not add a blackhole route for $pool"
    done
}

done_ok() {
    ensure_host_guard
    ensure_pool_blackhole
    echo "DOCKER_HOST=$HOST"
    exit 0
}

[[ $EUID -eq 0 ]] || die "must run as root (dockerd needs it)"

# Debian packages providing what this script runs; installed when missing (fresh machines).
declare -A PROVIDER=([dockerd]=docker.io [docker]=docker.io [ip]=iproute2 [iptables]=iptables [pgrep]=procps)
missing=()
for tool in "${!PROVIDER[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PROVIDER[$tool]}")
done
if (( ${#missing[@]} )); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
for tool in "${!PROVIDER[@]}" flock setsid timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool after installing packages: $tool"
done

if answering; then
    done_ok
fi

mkdir -p "$VV_DOCKER_DIR" "$EXEC_ROOT"
chmod 0711 "$VV_DOCKER_DIR"

# Several engineers (and test runs) may call this at once: only one of them starts the daemon.
exec 9>"$VV_DOCKER_DIR/start.lock"
flock -w $((START_TIMEOUT + 60)) 9 || die "timed out waiting for another dockerd.sh to finish"

if answering; then
    done_ok
fi

# A fresh machine without cgroups mounted cannot run containers; mount the unified hierarchy.
if [[ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]]; then
    log "mounting cgroup2 on /sys/fs/cgroup"
    mount -t cgroup2 none /sys/fs/cgroup || die "could not mount cgroups"
fi

# Our own bridge: the default docker0 would collide with a system dockerd on the same host.
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add name "$BRIDGE" type bridge
    ip addr add "$BIP" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up

# The pid of a live dockerd from our pid file. A zombie (killed, not yet reaped) does not count.
daemon_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    grep -qE '^State:[[:space:]]+Z' "/proc/$pid/status" 2>/dev/null && return 1
    echo "$pid"
}

# A dockerd for our pid file that is still starting up (before it has written the pid file).
daemon_alive() {
    daemon_pid >/dev/null || pgrep -f -- "--pidfile $PIDFILE" >/dev/null 2>&1
}

start_daemon() {
    local driver_args=()
    if [[ -n "${1:-}" ]]; then
        driver_args=(--storage-driver "$1")
    fi
    log "starting dockerd (socket $SOCK, log $LOG${1:+, storage driver $1})"
    # Only called while no live dockerd owns the pid file: a pid file left by a killed (perhaps still
    # unreaped) daemon would make the new one refuse to start.
    rm -f "$SOCK" "$PIDFILE"
    # setsid: the daemon must outlive this script and the shell that ran it.
    setsid dockerd \
        -H "$HOST" \
        --data-root "$VV_DOCKER_DIR/data" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$PIDFILE" \
        --bridge "$BRIDGE" \
        --default-address-pool "base=$POOL,size=24" \
        "${driver_args[@]}" \
        </dev/null >>"$LOG" 2>&1 9>&- &
}

wait_answering() {
    local deadline=$((SECONDS + START_TIMEOUT))
    while (( SECONDS < deadline )); do
        answering && return 0
        # Stop waiting as soon as the daemon has died instead of sleeping out the whole deadline.
        if ! daemon_alive; then
            sleep 1
            answering
            return
        fi
        sleep 1
    done
    return 1
}

driver="${VV_DOCKER_STORAGE_DRIVER:-}"
for _ in 1 2 3; do
    started=0
    if daemon_alive; then
        log "a dockerd for $PIDFILE is running but not answering yet; waiting"
    else
        start_daemon "$driver"
        started=1
    fi
    if wait_answering; then
        done_ok
    fi
    if daemon_alive; then
        break  # alive but silent for the whole deadline: restarting it would not help
    fi
    if (( started == 0 )); then
        continue  # someone else's start died; try our own
    fi
    # overlay2 is unavailable on some backing filesystems (e.g. overlayfs itself); vfs always works.
    if [[ -z "$driver" ]] && tail -n 50 "$LOG" | grep -qiE 'storage.driver|graphdriver|overlay'; then
        log "dockerd failed with the default storage driver; retrying with vfs"
        driver=vfs
        continue
    fi
    break
done

tail -n 40 "$LOG" >&2
die "dockerd did not answer on $HOST within ${START_TIMEOUT}s (log: $LOG)"
