#!/bin/sh
# How long another process waits for the state store's write lock while
# smsotp-radiusd is at full load: starts smsotp-radiusd on 127.0.0.1, loads
# it with radload (64 logins in flight), and meanwhile times WRITES runs of
# `smsotp user unlock` (two write transactions each: the failures, then the
# SMS window)
# against the same store. Prints each time, the mean and the maximum. Without
# turn-taking these waits reached seconds (a busy timeout of 5 s fails an
# sshd login); see SharedStore in core/src/store.rs.
#
#   scripts/bench-store-contention.sh             # 20 writes
#   WRITES=50 NO_BUILD=1 scripts/bench-store-contention.sh
#
# Everything it starts listens on 127.0.0.1 only and is stopped on exit.
set -eu

cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/bench-config.sh
WRITES=${WRITES:-20}
USERS=10000
target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "${NO_BUILD:-}" != 1 ]; then
    cargo build --release -p smsotp-radiusd -p smsotp -p smsotp-e2e --bin smsotp-radiusd --bin smsotp --bin radload
fi
bin=$target_dir/release
work=$(mktemp -d /tmp/bench-store.XXXXXX)
srv_pid=""
load_pid=""
cleanup() {
    for p in $load_pid $srv_pid; do kill "$p" 2>/dev/null || true; done
    for p in $load_pid $srv_pid; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

umask 077
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$work/secret"
"$bin/radload" --users "$USERS" --password pw --write-phones "$work/phones.toml" \
    --write-freeradius-users "$work/fr-users" >/dev/null
chmod 0644 "$work/phones.toml"
port=$("$bin/radload" --free-udp-port)
bench_config "$work" "$port" 4
"$bin/smsotp-radiusd" --config "$work/smsotp.toml" 2>"$work/radiusd.log" &
srv_pid=$!
i=0
until grep -q "ready" "$work/radiusd.log" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || { cat "$work/radiusd.log" >&2; echo "smsotp-radiusd did not start" >&2; exit 1; }
    sleep 0.1
done
"$bin/radload" --target "127.0.0.1:$port" --secret-file "$work/secret" --flows 10000000 \
    --duration 120 --inflight 64 --sockets 4 --users "$USERS" --password pw \
    --outbox "$work/outbox.jsonl" --phones "$work/phones.toml" >"$work/load.out" 2>&1 &
load_pid=$!
sleep 2

times=""
n=0
while [ "$n" -lt "$WRITES" ]; do
    n=$((n + 1))
    start=$(date +%s%N)
    "$bin/smsotp" --config "$work/smsotp.toml" user unlock "bench$(printf %05d "$n")" >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; echo "write $n failed under load" >&2; exit 1; }
    end=$(date +%s%N)
    ms=$(((end - start) / 1000000))
    echo "write $n: $ms ms"
    times="$times $ms"
    sleep 0.2
done
kill -0 "$load_pid" 2>/dev/null || { cat "$work/load.out" >&2; echo "the load ended before the writes" >&2; exit 1; }
echo "$times" | awk '{ s = 0; m = 0; for (i = 1; i <= NF; i++) { s += $i; if ($i > m) m = $i }
    printf "admin-tool writes under full RADIUS load: %d, mean %.1f ms, max %d ms (each includes starting the tool)\n", NF, s / NF, m }'
echo "reproduce: cd $root && WRITES=$WRITES scripts/bench-store-contention.sh"
