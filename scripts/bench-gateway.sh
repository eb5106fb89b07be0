#!/bin/sh
# Benchmarks smsotp-radiusd against a slow SMS gateway (issue #17): the
# two-round challenge login with INFLIGHT (64) logins in flight, each
# waiting for a local HTTP gateway (smsgw, tests/src/bin/smsgw.rs) that
# answers after D ms, for D in DELAYS ("500 1000 hang"; "hang" never
# answers, so every send ends at the provider's timeout). radload
# (tests/src/bin/radload.rs) drives it like a NAS (3 s timeout, 2
# retransmits) and meanwhile times answers that need no SMS: one at a
# time every PROBE_MS ms, a Status-Server or a State never issued.
#
#   scripts/bench-gateway.sh                   # 30 s per delay
#   DURATION=60 DELAYS="200 500" scripts/bench-gateway.sh
#
# For each delay it prints logins/s, the limit W/D, their ratio (target:
# at least 0.9), the whole flow's p50/p99, the p99 of answers that need
# no SMS (target with the hanging gateway: under 10 ms), and the SMS the
# gateway received against the logins begun (target: equal, nothing sent
# twice), with the command that reproduces each run.
#
# smsotp-radiusd runs with the product's defaults where they matter here:
# workers (4) and max_pending_sends (256) unset, audit to syslog (rsyslog
# is installed with apt when missing, and started when not running; if
# this script started it, it stops it at exit). Rate limits are raised so
# that the same users can log in again and again, as in bench-radius.sh.
#
# Knobs (environment): INFLIGHT (64), DURATION (30 s of starting logins
# per delay), DELAYS ("500 1000 hang"), PROVIDER_TIMEOUT (4 s, the
# provider's timeout: bounds the hanging runs), NAS_TIMEOUT (3000 ms),
# NAS_RETRIES (2), PROBE_MS (20), USERS (2000), SOCKETS (1: one NAS sends from one socket), KEEP=1 (keep
# the temp dir), NO_BUILD=1 (use the release binaries in target/),
# SERVER=PATH (another smsotp-radiusd binary, e.g. an older build to
# compare with; its config must not need keys it lacks: this one sets
# none of the send lane's).
#
# Everything it starts listens on 127.0.0.1 only and is stopped, by pid,
# when the script exits, however it exits.
set -eu

cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/bench-config.sh

INFLIGHT=${INFLIGHT:-64}
DURATION=${DURATION:-30}
DELAYS=${DELAYS:-500 1000 hang}
PROVIDER_TIMEOUT=${PROVIDER_TIMEOUT:-4}
NAS_TIMEOUT=${NAS_TIMEOUT:-3000}
NAS_RETRIES=${NAS_RETRIES:-2}
PROBE_MS=${PROBE_MS:-20}
USERS=${USERS:-2000}
SOCKETS=${SOCKETS:-1}
PASSWORD=bench-password
RATIO_TARGET=0.9
FAST_P99_TARGET_MS=10

say() { echo "bench-gateway: $*" >&2; }
die() { say "$*"; exit 1; }

# ------------------------------------------------------------------ syslog
start_syslog

# ------------------------------------------------------------------ build
target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "${NO_BUILD:-}" != 1 ]; then
    cargo build --release -p smsotp-e2e --bin radload --bin smsgw
    cargo build --release -p smsotp-radiusd --bin smsotp-radiusd
fi
radload="$target_dir/release/radload"
smsgw="$target_dir/release/smsgw"
server=${SERVER:-$target_dir/release/smsotp-radiusd}
for b in "$radload" "$smsgw" "$server"; do
    [ -x "$b" ] || die "$b is missing; run without NO_BUILD=1"
done

work=$(mktemp -d /tmp/bench-gateway.XXXXXX)
gw_pid=""
srv_pid=""
stop() {
    # Only the processes this script started, by pid.
    for pid in $srv_pid $gw_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $srv_pid $gw_pid; do
        wait "$pid" 2>/dev/null || true
    done
    srv_pid=""
    gw_pid=""
}
cleanup() {
    stop
    if [ -n "$syslog_pid" ]; then
        kill -TERM "$syslog_pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-}" = 1 ]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A value of smsgw's stats file: stat FILE KEY.
stat_of() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; }

secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
umask 077
printf '%s' "$secret" >"$work/secret"
"$radload" --users "$USERS" --password "$PASSWORD" --write-phones "$work/phones.toml"
chmod 0644 "$work/phones.toml"

run_delay() { # D (ms or hang)
    d=$1
    dir="$work/$d"
    mkdir -p "$dir"
    "$smsgw" --listen 127.0.0.1:0 --delay "$d" --log "$dir/sms.jsonl" --stats "$dir/gateway.stats" \
        >"$dir/gateway.out" 2>&1 &
    gw_pid=$!
    wait_for "$dir/gateway.out" "smsgw listening on" "$gw_pid" smsgw
    gw_addr=$(sed -n 's/^smsgw listening on //p' "$dir/gateway.out")
    port=$("$radload" --free-udp-port)
    cat >"$dir/smsotp.toml" <<EOF
[radius]
listen = ["127.0.0.1:$port"]
primary = { kind = "none" }

[[radius.client]]
name = "bench"
address = "127.0.0.1"
secret_file = "$work/secret"
mode = "challenge"

[limits]
sms_per_user = "1000000/1h"
sms_global = "100000000/1h"
lockout_after = 1000

[[directory]]
kind = "file"
path = "$work/phones.toml"

[[provider]]
kind = "http"
name = "gateway"
url = "http://$gw_addr/sms"
method = "POST"
body = { to = "{number}", message = "{message}" }
allow_http = true
timeout = "${PROVIDER_TIMEOUT}s"

[store]
kind = "sqlite"
path = "$dir/state.db"
EOF
    chmod 0600 "$dir/smsotp.toml"
    "$server" --config "$dir/smsotp.toml" 2>"$dir/stderr.log" &
    srv_pid=$!
    wait_for "$dir/stderr.log" "smsotp-radiusd: ready" "$srv_pid" smsotp-radiusd
    wait_for "$dir/stderr.log" "phone lists checked" "$srv_pid" "smsotp-radiusd's phone-list check"
    cut -d' ' -f1-3 /proc/loadavg >"$dir/load"
    "$radload" --label "gateway-$d" --target "127.0.0.1:$port" --secret-file "$work/secret" \
        --outbox "$dir/sms.jsonl" --phones "$work/phones.toml" --users "$USERS" \
        --flows 0 --duration "$DURATION" --inflight "$INFLIGHT" --sockets "$SOCKETS" \
        --password "$PASSWORD" --timeout "$NAS_TIMEOUT" --retries "$NAS_RETRIES" \
        --probe-interval "$PROBE_MS" | tee "$dir/radload.out"
    # The server's threads (workers, send lane, commit) and memory at the
    # end of the load, before it stops.
    grep -E '^(Threads|VmRSS|VmHWM)' "/proc/$srv_pid/status" | tr -s ' \t' ' ' | tr '\n' ' ' >"$dir/server.status"
    # Sends still in flight when radload stopped finish before the count.
    stop
    echo "server: $server --config $dir/smsotp.toml" >>"$dir/radload.out"
    echo "gateway: $smsgw --listen $gw_addr --delay $d --log $dir/sms.jsonl" >>"$dir/radload.out"
    cp "$dir/stderr.log" "$dir/stderr.kept"
}

for d in $DELAYS; do
    run_delay "$d"
done

# ------------------------------------------------------------------ summary
echo
echo "=== bench-gateway summary ($(nproc) CPUs; W=$INFLIGHT logins in flight; ${DURATION}s per delay; NAS timeout ${NAS_TIMEOUT} ms, $NAS_RETRIES retransmits; provider timeout ${PROVIDER_TIMEOUT}s; workers and max_pending_sends at their defaults; audit to syslog) ==="
for d in $DELAYS; do
    dir="$work/$d"
    out="$dir/radload.out"
    rate=$(field "$out" rate)
    begun=$(field "$out" begun)
    sms=$(stat_of "$dir/gateway.stats" requests)
    conns=$(stat_of "$dir/gateway.stats" connections)
    fast=$(field "$out" fast_p99_ms)
    if [ "$d" = hang ]; then
        awk -v r="$rate" -v b="$begun" -v s="$sms" -v c="$conns" -v f="$fast" -v t="$FAST_P99_TARGET_MS" \
            -v e="$(field "$out" errors)" -v x="$(field "$out" retransmits)" -v fl="$(field "$out" fast_lost)" \
            -v fn="$(field "$out" fast_n)" -v l="$(cat "$dir/load")" 'BEGIN {
            printf "D=hang   logins completed/s %s (none can: every send times out)  no-SMS answers p99 %.3f ms (%s the %s ms target; %d probes, %d unanswered or wrong)  SMS received %d for %d logins begun (%s)  gateway connections %d  NAS retransmits %d  failed logins %d  load %s\n",
                r, f, (f < t ? "meets" : "MISSES"), t, fn, fl, s, b, (s == b ? "nothing sent twice" : "MISMATCH"), c, x, e, l }'
    else
        awk -v r="$rate" -v d="$d" -v w="$INFLIGHT" -v p50="$(field "$out" p50_ms)" -v p99="$(field "$out" p99_ms)" \
            -v b="$begun" -v s="$sms" -v c="$conns" -v f="$fast" -v e="$(field "$out" errors)" \
            -v x="$(field "$out" retransmits)" -v t="$RATIO_TARGET" -v r2="$(field "$out" round2_p99_ms)" \
            -v l="$(cat "$dir/load")" 'BEGIN {
            lim = w / (d / 1000); q = r / lim
            printf "D=%sms logins/s %s  W/D %.1f  ratio %.3f (%s %s)  flow p50 %s ms p99 %s ms  no-SMS answers p99 %.3f ms (round two p99 %s ms)  SMS received %d for %d logins begun (%s)  gateway connections %d  NAS retransmits %d  errors %d  load %s\n",
                d, r, lim, q, (q >= t ? "meets" : "MISSES"), t, p50, p99, f, r2, s, b, (s == b ? "nothing sent twice" : "MISMATCH"), c, x, e, l }'
    fi
    echo "    smsotp-radiusd after the load: $(cat "$dir/server.status")"
    echo "    $(sed -n 's/^  reproduce: //p' "$out")"
    echo "    $(sed -n 's/^server: //p' "$out")"
    echo "    $(sed -n 's/^gateway: //p' "$out")"
done
echo "reproduce all: cd $root && ${SERVER:+SERVER=$SERVER }INFLIGHT=$INFLIGHT DURATION=$DURATION DELAYS=\"$DELAYS\" PROVIDER_TIMEOUT=$PROVIDER_TIMEOUT NAS_TIMEOUT=$NAS_TIMEOUT NAS_RETRIES=$NAS_RETRIES PROBE_MS=$PROBE_MS USERS=$USERS scripts/bench-gateway.sh"
echo "(the per-run commands above use files in $work, which is removed at exit unless KEEP=1)"
