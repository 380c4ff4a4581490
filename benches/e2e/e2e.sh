#!/usr/bin/env bash
# End-to-end loopback bench: LISTO node vs nginx vs Varnish vs the loopback TCP limit (issue 7, item 3).
#
#   bash benches/e2e/e2e.sh            # ~6-8 minutes; the table goes to stdout and target/e2e/results.md
#
# In one run, on 127.0.0.1 only:
#   1. iperf3: one stream and -P 4 (the loopback TCP limit);
#   2. a hot 2 MiB object (a static file server upstream) through each edge under
#      `wrk -t2 -c200 -d10s --timeout 10s --latency`: Gbit/s, p50/p99/max, the edge's CPU seconds (utime+stime of the
#      whole process tree, /proc/PID/stat, before/after);
#   3. a live channel (`listo origin --latency-ms 20`) through each edge with N viewers: upstream
#      requests per segment, segment TTFB, origin publish -> viewer has it; the same viewers straight
#      at the origin as the reference;
#   4. a cold object the origin trickles (`--rate-mbps 1`, ~1.6 s): 1 leader + W waiters, waiters'
#      first body byte vs the leader's;
# then one table with LISTO, nginx, Varnish and the ratios LISTO/nginx, LISTO/Varnish, LISTO/iperf3.
#
# Knobs (environment): E2E_VIEWERS=200 E2E_POLL_MS=250 E2E_LIVE_SECS=16 E2E_HOT_SECS=10 E2E_HOT_RUNS=3
#   E2E_WAITERS=50 E2E_TRIALS=5 E2E_PORT_BASE=21100 E2E_EDGES="listo nginx varnish direct"
#   E2E_PERF=1 (perf record LISTO's first hot run -> target/e2e/perf-listo-hot.txt)
#   E2E_NO_INSTALL=1 E2E_NO_BUILD=1
#   E2E_LISTO_WORKERS=N (listo node --workers; default: the node's own default, one per core,
#   like nginx's worker_processes auto); E2E_LISTO_SENDFILE=off (listo node --sendfile off:
#   bodies copied with writev instead of sent from memfds by sendfile)
# Every server it starts is stopped on exit (trap), by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/e2e
LISTO=$TARGET/release/listo
PY=python3

VIEWERS=${E2E_VIEWERS:-200}
POLL_MS=${E2E_POLL_MS:-250}
LIVE_SECS=${E2E_LIVE_SECS:-16}
HOT_SECS=${E2E_HOT_SECS:-10}
HOT_RUNS=${E2E_HOT_RUNS:-3}
WAITERS=${E2E_WAITERS:-50}
TRIALS=${E2E_TRIALS:-5}
BASE=${E2E_PORT_BASE:-21100}
EDGES=${E2E_EDGES:-listo nginx varnish direct}
PERF=${E2E_PERF:-0}

P_STATIC=$BASE            # static file server: the hot object's upstream
P_ORIGIN=$((BASE + 1))    # listo origin --latency-ms 20 (live channel)
P_TRICKLE=$((BASE + 2))   # listo origin --latency-ms 20 --rate-mbps 1 (trickled object)
P_LISTO=$((BASE + 3))
P_ADMIN=$((BASE + 4))
P_NGINX=$((BASE + 5))
P_VARNISH=$((BASE + 6))
P_IPERF=$((BASE + 7))
HOT_PATH=/hot/seg_2mib.ts
HOT_SIZE=2097152

log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- processes we start, and the trap
PIDS=()
RUN=""
CACHE=""

descendants() { # pid -> its descendants' pids (depth first)
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

stop_pid() {
    local pid=$1 kids i
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(descendants "$pid" | tr '\n' ' ')
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    [ -n "$CACHE" ] && rm -rf "$CACHE"
    [ -n "$RUN" ] && rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD... : runs CMD in the background with output to $RUN/NAME.log; sets LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop PID: stops it and forgets it.
stop() {
    local pid=$1 p keep=()
    stop_pid "$pid"
    for p in "${PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
    PIDS=(${keep[@]+"${keep[@]}"})
}

wait_port() { # port pid name
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { tail -20 "$RUN/$3.log" >&2; die "$3 exited before listening on $1"; }
        sleep 0.1
    done
    tail -20 "$RUN/$3.log" >&2
    die "$3 not listening on 127.0.0.1:$1 after 10 s"
}

loadnow() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------- install, build
need=()
for t in nginx:nginx varnishd:varnish wrk:wrk iperf3:iperf3 python3:python3 ss:iproute2; do
    command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null 2>&1; then need+=(linux-perf); fi
if [ ${#need[@]} -gt 0 ]; then
    [ "${E2E_NO_INSTALL:-0}" = 1 ] && die "missing: ${need[*]}"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services only where policy allows; this bench uses its own instances.

if [ "${E2E_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$LISTO" ] || die "no $LISTO"

# Listening ports below the ephemeral range: an outgoing connection (wrk, the viewers, an edge's
# upstream) can hold a port of that range as its local port and make a later bind fail.
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range
if [ "$((BASE + 7))" -ge "$EPH_LO" ] && [ "$BASE" -le "$EPH_HI" ]; then
    log "warning: ports $BASE-$((BASE + 7)) overlap the ephemeral range $EPH_LO-$EPH_HI"
fi
for p in $P_STATIC $P_ORIGIN $P_TRICKLE $P_LISTO $P_ADMIN $P_NGINX $P_VARNISH $P_IPERF; do
    if ss -Htln "sport = :$p" | grep -q .; then die "port $p is in use (set E2E_PORT_BASE)"; fi
done

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/results.md
RUN=$(mktemp -d /tmp/listo-e2e.XXXXXX)
chmod 755 "$RUN" # varnishd's child runs as an unprivileged user
if [ -d /dev/shm ] && [ -w /dev/shm ]; then CACHE=$(mktemp -d /dev/shm/listo-e2e-cache.XXXXXX); else CACHE=$RUN/cache; fi
mkdir -p "$RUN/www/hot" "$RUN/nginx-tmp" "$CACHE"
head -c "$HOT_SIZE" /dev/urandom >"$RUN/www$HOT_PATH"

UPTIME_START=$(uptime)
log "load: $UPTIME_START"
export E2E_META_UPTIME="$UPTIME_START" E2E_META_HOT_RUNS="$HOT_RUNS"
E2E_META_NGINX=$(nginx -v 2>&1 | sed 's/.*nginx\///' || true)
E2E_META_VARNISH=$(varnishd -V 2>&1 | head -1 | sed 's/.*(varnish-\([^ ]*\) .*/\1/' || true)
E2E_META_WRK=$(wrk -v 2>&1 | head -1 | awk '{print $2}' || true)
E2E_META_IPERF=$(iperf3 --version | head -1 | awk '{print $2}' || true)
E2E_META_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')
if ! (cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null); then E2E_META_REV="$E2E_META_REV+uncommitted"; fi
export E2E_META_NGINX E2E_META_VARNISH E2E_META_WRK E2E_META_IPERF E2E_META_REV
$PY - "$OUT/meta.json" <<'EOF'
import json, os, platform, sys, time
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
e = os.environ
json.dump({
    "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    "command": " ".join([f"{k}={v}" for k, v in sorted(e.items()) if k.startswith("E2E_") and not k.startswith("E2E_META_")]
                        + ["bash benches/e2e/e2e.sh"]),
    "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
    "nginx": e["E2E_META_NGINX"], "varnish": e["E2E_META_VARNISH"], "wrk": e["E2E_META_WRK"],
    "iperf3": e["E2E_META_IPERF"], "listo_rev": e["E2E_META_REV"],
    "uptime_start": e["E2E_META_UPTIME"].strip(), "hot_runs": int(e["E2E_META_HOT_RUNS"]),
}, open(sys.argv[1], "w"), indent=1)
EOF

# ---------------------------------------------------------------- 1. iperf3
log "1/4 iperf3 loopback TCP (5 s each)"
start iperf3 iperf3 -s -B 127.0.0.1 -p "$P_IPERF"
IPERF_PID=$LAST_PID
wait_port "$P_IPERF" "$IPERF_PID" iperf3
for streams in 1 4; do
    L=$(loadnow)
    timeout 30 iperf3 -c 127.0.0.1 -p "$P_IPERF" -t 5 -P "$streams" -J >"$RUN/iperf$streams.json"
    $PY "$HERE/e2e.py" iperf --file "$RUN/iperf$streams.json" --streams "$streams" --load "$L" --out "$OUT/iperf$streams.json"
    sleep 1
done
stop "$IPERF_PID"

# ---------------------------------------------------------------- the upstreams and the edges
start static "$PY" "$HERE/e2e.py" static-origin --port "$P_STATIC" --dir "$RUN/www"
STATIC_PID=$LAST_PID
wait_port "$P_STATIC" "$STATIC_PID" static

start_origins() {
    start origin "$LISTO" origin --listen "127.0.0.1:$P_ORIGIN" --latency-ms 20
    ORIGIN_PID=$LAST_PID
    start trickle "$LISTO" origin --listen "127.0.0.1:$P_TRICKLE" --latency-ms 20 --rate-mbps 1
    TRICKLE_PID=$LAST_PID
    wait_port "$P_ORIGIN" "$ORIGIN_PID" origin
    wait_port "$P_TRICKLE" "$TRICKLE_PID" trickle
}

fill() { # template -> file
    sed -e "s|@RUN@|$RUN|g" -e "s|@CACHE@|$CACHE|g" -e "s|@PORT@|$2|g" \
        -e "s|@STATIC_PORT@|$P_STATIC|g" -e "s|@ORIGIN_PORT@|$P_ORIGIN|g" -e "s|@TRICKLE_PORT@|$P_TRICKLE|g" \
        "$1" >"$3"
}

start_edge() { # name -> EDGE_PID, EDGE_PORT
    case $1 in
    listo)
        start listo "$LISTO" node --workers "${E2E_LISTO_WORKERS:-$(nproc)}" --sendfile "${E2E_LISTO_SENDFILE:-on}" --listen "127.0.0.1:$P_LISTO" --admin "127.0.0.1:$P_ADMIN" \
            --channel "hot=/hot/@127.0.0.1:$P_STATIC" \
            --channel "live=/live/ch0/@127.0.0.1:$P_ORIGIN" \
            --channel "trickle=/live/ch1/@127.0.0.1:$P_TRICKLE"
        EDGE_PORT=$P_LISTO
        ;;
    nginx)
        fill "$HERE/nginx.conf.in" "$P_NGINX" "$RUN/nginx.conf"
        rm -rf "${CACHE:?}"/*
        nginx -t -q -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" || die "nginx -t"
        start nginx nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log"
        EDGE_PORT=$P_NGINX
        ;;
    varnish)
        fill "$HERE/varnish.vcl.in" "$P_VARNISH" "$RUN/varnish.vcl"
        start varnish varnishd -F -a "127.0.0.1:$P_VARNISH" -f "$RUN/varnish.vcl" -s malloc,256m \
            -n "$RUN/varnish" -T none
        EDGE_PORT=$P_VARNISH
        ;;
    *) die "unknown edge $1" ;;
    esac
    EDGE_PID=$LAST_PID
    wait_port "$EDGE_PORT" "$EDGE_PID" "$1"
}

for edge in $EDGES; do
    log "edge: $edge (load $(loadnow))"
    start_origins
    if [ "$edge" = direct ]; then
        log "3/4 live, $VIEWERS viewers straight at the origin (reference)"
        $PY "$HERE/e2e.py" live --name direct --port "$P_ORIGIN" --origin-port "$P_ORIGIN" --edge-pid "$ORIGIN_PID" \
            --viewers "$VIEWERS" --poll-ms "$POLL_MS" --measure "$LIVE_SECS" --out "$OUT/live-direct.json"
        log "4/4 trickled object straight at the origin (reference)"
        $PY "$HERE/e2e.py" coalesce --name direct --port "$P_TRICKLE" --origin-port "$P_TRICKLE" \
            --waiters "$WAITERS" --trials "$TRIALS" --out "$OUT/coalesce-direct.json"
    else
        start_edge "$edge"
        perf_args=()
        if [ "$PERF" = 1 ] && [ "$edge" = listo ]; then perf_args=(--perf-out "$RUN/perf-listo-hot.data"); fi
        log "2/4 hot 2 MiB object through $edge: $HOT_RUNS x wrk -t2 -c200 -d${HOT_SECS}s"
        $PY "$HERE/e2e.py" hot --name "$edge" --port "$EDGE_PORT" --path "$HOT_PATH" --size "$HOT_SIZE" \
            --edge-pid "$EDGE_PID" --origin-log "$RUN/static.log" --duration "$HOT_SECS" --runs "$HOT_RUNS" \
            ${perf_args[@]+"${perf_args[@]}"} --out "$OUT/hot-$edge.json"
        if [ ${#perf_args[@]} -gt 0 ] && [ -f "$RUN/perf-listo-hot.data" ]; then
            perf report -i "$RUN/perf-listo-hot.data" --no-children --percent-limit 1 --stdio 2>/dev/null \
                | grep -v '^$' | head -150 >"$OUT/perf-listo-hot.txt" || true
        fi
        log "3/4 live through $edge: $VIEWERS viewers"
        $PY "$HERE/e2e.py" live --name "$edge" --port "$EDGE_PORT" --origin-port "$P_ORIGIN" --edge-pid "$EDGE_PID" \
            --viewers "$VIEWERS" --poll-ms "$POLL_MS" --measure "$LIVE_SECS" --out "$OUT/live-$edge.json"
        log "4/4 trickled object through $edge: 1 leader + $WAITERS waiters x $TRIALS"
        $PY "$HERE/e2e.py" coalesce --name "$edge" --port "$EDGE_PORT" --origin-port "$P_TRICKLE" \
            --waiters "$WAITERS" --trials "$TRIALS" --out "$OUT/coalesce-$edge.json"
        if [ "$edge" = listo ]; then
            curl -fsS "http://127.0.0.1:$P_ADMIN/v1/stats" >"$OUT/listo-stats.json" 2>/dev/null || true
        fi
        stop "$EDGE_PID"
        cp "$RUN/$edge.log" "$OUT/$edge.log" 2>/dev/null || true
    fi
    stop "$ORIGIN_PID"
    stop "$TRICKLE_PID"
done
stop "$STATIC_PID"

UPTIME_END=$(uptime)
$PY - "$OUT/meta.json" "$UPTIME_END" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["uptime_end"] = sys.argv[2].strip()
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
$PY "$HERE/e2e.py" report --dir "$OUT" --out "$OUT/results.md"
log "wrote $OUT/results.md"
