#!/bin/sh
# Benchmarks smsotp-radiusd against FreeRADIUS 3.2 doing the same two-round
# challenge login (PAP, Access-Challenge with State, code, Access-Accept),
# both on loopback, both loaded by radload (tests/src/bin/radload.rs) with
# the same number of flows in flight. Prints flows/s and latency of each,
# the ratio, the p99 of a request (either round: what a NAS waits for)
# against the 5 ms target, then leaves 10,000 challenges
# pending in a fresh smsotp-radiusd and prints its VmRSS against 30 MB
# (and how much of it is the program file, how much the rest).
#
#   scripts/bench-radius.sh                  # 20,000 flows each, 64 in flight
#   FLOWS=50000 INFLIGHT=128 scripts/bench-radius.sh
#   MODE=kind scripts/bench-radius.sh        # the kinder settings, labelled
#   STORE=redis scripts/bench-radius.sh      # also smsotp-radiusd on Redis
#
# MODE=defaults (the default, the headline): smsotp-radiusd runs with the
# product's defaults where they matter (workers unset, [audit] left out so
# every decision is audited to syslog, with rsyslog installed when missing
# and started when nothing reads /dev/log, as on any Debian host), and
# radload sends from one socket, as one NAS does. FreeRADIUS runs with its
# own default logging (log { auth = no }: its start-up lines, to a file,
# and no line per request). MODE=kind: syslog off and four source
# sockets, settings no user runs; its figures are labelled so.
#
# STORE=redis adds smsotp-radiusd on a local redis-server (TCP on
# 127.0.0.1, appendonly yes + appendfsync everysec, as docs/redis.md
# recommends) to every round, beside the same server on SQLite, and prints
# the ratio of the two (target: Redis at least 0.8 of SQLite), the store
# steps per login (EVALSHA and MULTI calls, INFO commandstats, over the
# flows) and the Redis reads per login (the server's read events, INFO
# stats total_reads_processed, over the flows: the workers' commands
# arrive pipelined, several per read), the append-only file's growth per
# login (INFO persistence aof_current_size) and how many times Redis
# rewrote it (a fork) during the rounds; then one run of three
# smsotp-radiusd instances on that Redis, each loaded by a radload of its
# own (three NASes, a third of the flows and of the flows in flight each,
# users of their own), their flows/s summed.
#
# Every store the rounds run on starts with an hour of sends in its send
# windows (tests/src/bin/fill_windows.rs: one SMS in each of the 62
# buckets the global window keeps, through the store's own reserve), as at a site
# that has been sending codes for an hour: a store filled only by a
# benchmark of a few seconds holds one bucket or two, and counting them
# costs less than at any real site at 9 a.m. (on Redis the difference was
# half of redis-server's time per login). FILL=0 leaves the stores empty,
# a kinder setting; the summary says which.
#
# Each run also prints the CPU time of the server and of rsyslogd per
# 1,000 flows, and the context switches of the whole machine per flow
# (/proc/stat ctxt; other work on the machine adds to it).
#
# Both servers run side by side; each first gets WARMUP flows (2000) that
# are not counted, as benchmarks do, so neither is measured while its
# caches fill (smsotp-radiusd also once it has checked its phone list, its
# counterpart of FreeRADIUS reading its users file before it is ready).
# Then ROUNDS rounds (5) of FLOWS flows each, the two servers taking turns
# and swapping who goes first each round: this machine's speed drifts by
# 20% and more within a minute, and turns spread that over both. The
# summary gives every run, then the medians and the median of the
# per-round ratios.
#
# Knobs (environment): FLOWS (20000), WARMUP (2000), ROUNDS (5), DURATION (300 s, a cap per run),
# INFLIGHT (64), SOCKETS (1 in MODE=defaults, 4 in MODE=kind), USERS (10000), PENDING (10000), FILL (1),
# ONLY=freeradius|smsotp (run one side), STORE=sqlite|redis, KEEP=1 (keep the temp dir),
# NO_BUILD=1 (use the release binaries already in target/).
#
# Installs the Debian packages it needs when missing (freeradius,
# freeradius-utils; needs root for that). Everything it starts listens on
# 127.0.0.1 only, runs in the foreground under this script, and is stopped
# when the script exits, however it exits.
set -eu

cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/bench-config.sh

FLOWS=${FLOWS:-20000}
WARMUP=${WARMUP:-2000}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-300}
INFLIGHT=${INFLIGHT:-64}
MODE=${MODE:-defaults}
case "$MODE" in
    defaults) SOCKETS=${SOCKETS:-1}; AUDIT=default; WORKERS=${WORKERS:-default} ;;
    kind) SOCKETS=${SOCKETS:-4}; AUDIT=off; WORKERS=${WORKERS:-4} ;;
    *) echo "bench-radius: MODE must be defaults or kind" >&2; exit 2 ;;
esac
USERS=${USERS:-10000}
PENDING=${PENDING:-10000}
ONLY=${ONLY:-}
STORE=${STORE:-sqlite}
FILL=${FILL:-1}
case "$FILL" in
    0 | 1) ;;
    *) echo "bench-radius: FILL must be 0 or 1" >&2; exit 2 ;;
esac
case "$STORE" in
    sqlite | redis) ;;
    *) echo "bench-radius: STORE must be sqlite or redis" >&2; exit 2 ;;
esac
[ "$STORE" = sqlite ] || [ "$ONLY" != freeradius ] || { echo "bench-radius: STORE=redis needs smsotp (not ONLY=freeradius)" >&2; exit 2; }
CODE=123456
PASSWORD=bench-password
P99_TARGET_MS=5
RSS_TARGET_KB=30720

say() { echo "bench-radius: $*" >&2; }
die() { say "$*"; exit 1; }

packages="freeradius freeradius-utils"
[ "$STORE" = sqlite ] || packages="$packages redis-server redis-tools"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    apt-get update -qq
    # policy-rc.d or no init: the packaged service may not start, which is
    # what we want; we never use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
freeradius_bin=$(command -v freeradius || echo /usr/sbin/freeradius)
[ -x "$freeradius_bin" ] || die "freeradius not found after installing it"

[ "$AUDIT" = off ] || start_syslog

target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "${NO_BUILD:-}" != 1 ]; then
    cargo build --release -p smsotp-e2e --bin radload --bin fill_windows
    if [ "$ONLY" != freeradius ]; then
        cargo build --release -p smsotp-radiusd --bin smsotp-radiusd
    fi
fi
radload="$target_dir/release/radload"
fill_windows="$target_dir/release/fill_windows"
server="$target_dir/release/smsotp-radiusd"
[ -x "$radload" ] || die "$radload is missing; run without NO_BUILD=1"
[ "$FILL" = 0 ] || [ -x "$fill_windows" ] || die "$fill_windows is missing; run without NO_BUILD=1"
[ "$ONLY" = freeradius ] || [ -x "$server" ] || die "$server is missing; run without NO_BUILD=1"

work=$(mktemp -d /tmp/bench-radius.XXXXXX)
fr_pid=""
sms_pid=""
red_pid=""
redis_pid=""
three_pids=""
stop() {
    # Only the processes this script started, by pid.
    for pid in $fr_pid $sms_pid $red_pid $three_pids; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $fr_pid $sms_pid $red_pid $three_pids; do
        wait "$pid" 2>/dev/null || true
    done
    fr_pid=""
    sms_pid=""
    red_pid=""
    three_pids=""
}
cleanup() {
    stop
    if [ -n "$redis_pid" ]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
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


secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
umask 077
printf '%s' "$secret" >"$work/secret"
"$radload" --users "$USERS" --password "$PASSWORD" \
    --write-phones "$work/phones.toml" --write-freeradius-users "$work/fr-users"

# radclient -x prints "Received Access-Challenge ..." and then the attributes.
radclient_round() {
    port=$1 what=$2
    out=$(cat | radclient -x -t 2 -r 1 "127.0.0.1:$port" auth "$secret" 2>&1) || true
    echo "$out" | grep -q "Received $what" || { echo "$out" >&2; die "radclient: expected $what"; }
    echo "$out"
}

# Round one and round two for one user with radclient; CODE_CMD prints the code.
smoke() {
    port=$1 code_cmd=$2
    out=$(printf 'User-Name = "bench00000"\nUser-Password = "%s"\nMessage-Authenticator = 0x00\n' \
        "$PASSWORD" | radclient_round "$port" Access-Challenge)
    state=$(echo "$out" | sed -n 's/^[[:space:]]*State = \(0x[0-9a-fA-F]*\).*/\1/p' | head -n 1)
    [ -n "$state" ] || { echo "$out" >&2; die "no State in the challenge"; }
    code=$(eval "$code_cmd")
    printf 'User-Name = "bench00000"\nUser-Password = "%s"\nState = %s\nMessage-Authenticator = 0x00\n' \
        "$code" "$state" | radclient_round "$port" Access-Accept >/dev/null
    say "radclient smoke test on port $port: Access-Challenge, then Access-Accept"
}

warm_up() { # label port code-args...
    label=$1 port=$2
    shift 2
    [ "$WARMUP" -gt 0 ] || return 0
    "$radload" --label "$label-warmup" --target "127.0.0.1:$port" --secret-file "$work/secret" \
        --flows "$WARMUP" --duration "$DURATION" --inflight "$INFLIGHT" --sockets "$SOCKETS" \
        --users "$USERS" --password "$PASSWORD" "$@" >"$work/$label.warmup.out" ||
        { cat "$work/$label.warmup.out" >&2; die "warm-up run against $label failed"; }
    say "$label: $WARMUP warm-up flows done ($(field "$work/$label.warmup.out" rate) flows/s), not counted"
}

# CPU time (user + system, in clock ticks) PID has used, threads included.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The running rsyslogd (its pid file; pgrep also lists exited ones not yet reaped).
syslogd_pid() {
    if [ -s /run/rsyslogd.pid ] && [ -d "/proc/$(cat /run/rsyslogd.pid)" ]; then
        cat /run/rsyslogd.pid
    else
        pgrep -x rsyslogd | head -n 1
    fi
}

# Context switches of the whole machine since boot.
ctxt() { awk '$1 == "ctxt" { print $2 }' /proc/stat; }
# The whole machine's CPU ticks since boot, all CPUs: busy (user, nice,
# system, irq, softirq, steal) and idle (idle, iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

run_load() { # label port server-pid code-args... ; prints and keeps the output
    label=$1 port=$2 pid=$3
    shift 3
    # Other work on the machine skews every figure: keep the load average.
    cut -d' ' -f1-3 /proc/loadavg >"$work/$label.load"
    # Where the CPU goes, whatever else the machine runs: the server's and
    # the syslog daemon's CPU time over the run, per 1000 flows.
    logd=$(syslogd_pid)
    [ "$AUDIT" = off ] || [ -n "$logd" ] || die "no syslog daemon is running: the defaults audit to syslog"
    s0=$(cpu_ticks "$pid") l0=$(if [ -n "$logd" ]; then cpu_ticks "$logd"; else echo 0; fi)
    # And the context switches of the whole machine (server, syslog,
    # Redis, the load) per flow: waking a thread costs CPU too.
    x0=$(ctxt)
    read -r b0 i0 <<EOF_TICKS
$(machine_ticks)
EOF_TICKS
    "$radload" --label "$label" --target "127.0.0.1:$port" --secret-file "$work/secret" \
        --flows "$FLOWS" --duration "$DURATION" --inflight "$INFLIGHT" --sockets "$SOCKETS" \
        --users "$USERS" --password "$PASSWORD" "$@" | tee "$work/$label.out"
    s1=$(cpu_ticks "$pid") l1=$(if [ -n "$logd" ]; then cpu_ticks "$logd"; else echo 0; fi)
    x1=$(ctxt)
    read -r b1 i1 <<EOF_TICKS
$(machine_ticks)
EOF_TICKS
    flows=$(field "$work/$label.out" completed)
    awk -v s=$((s1 - s0)) -v l=$((l1 - l0)) -v x=$((x1 - x0)) -v b=$((b1 - b0)) -v i=$((i1 - i0)) \
        -v f="${flows:-0}" -v hz="$(getconf CLK_TCK)" 'BEGIN { t = f > 0 ? 1000 / hz * 1000 / f : 0
        if (f > 0) printf "%.1f %.1f %.2f %.1f %.1f\n", s * t, l * t, x / f, b * t, i * t; else print "- - - - -" }' \
        >"$work/$label.cpu"
}

# --------------------------------------------------------------- FreeRADIUS
if [ "$ONLY" != smsotp ]; then
    fr="$work/freeradius"
    cp -a /etc/freeradius/3.0 "$fr"
    mkdir -p "$fr/log" "$fr/run"
    # Our own site alone (the stock default and inner-tunnel listen on 1812
    # and 18120), our client alone, our users alone, no EAP (it wants an
    # "Auth-Type EAP" section); root, no privilege drop.
    rm -f "$fr/sites-enabled/"* "$fr/mods-enabled/eap"
    sed -i -e 's/^\([[:space:]]*\)\(user\|group\) = freerad/\1#\2 = freerad/' \
        -e "s|^logdir = .*|logdir = $fr/log|" \
        -e "s|^run_dir = .*|run_dir = $fr/run|" "$fr/radiusd.conf"
    cp "$work/fr-users" "$fr/mods-config/files/authorize"
    fr_port=$("$radload" --free-udp-port)
    cat >"$fr/clients.conf" <<EOF
client bench {
	ipaddr = 127.0.0.1
	secret = $secret
	require_message_authenticator = yes
	nas_type = other
}
EOF
    cat >"$fr/sites-enabled/bench" <<EOF
server bench {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = $fr_port
		# The stock receive buffer drops bursts of a few hundred packets.
		recv_buff = 4194304
	}
	authorize {
		# FreeRADIUS 3.2.1 signs a reply only when it holds the attribute;
		# smsotp-radiusd signs every reply, and radload checks both alike.
		update reply {
			&Message-Authenticator := 0x00
		}
		if (&request:State) {
			# Round two: the code.
			if (&request:User-Password == "$CODE") {
				update control {
					&Auth-Type := Accept
				}
			}
			else {
				reject
			}
		}
		else {
			# Round one: the password (Cleartext-Password from files).
			files
			pap
		}
	}
	authenticate {
		Auth-Type PAP {
			pap
			if (ok) {
				update control {
					&Response-Packet-Type := Access-Challenge
				}
				update reply {
					&Reply-Message := "Enter the code sent to your phone"
					&Session-Timeout := 300
				}
				handled
			}
		}
	}
	post-auth {
	}
}
EOF
    "$freeradius_bin" -f -d "$fr" -l stdout >"$work/freeradius.log" 2>&1 &
    fr_pid=$!
    wait_for "$work/freeradius.log" "Ready to process requests" "$fr_pid" freeradius
    smoke "$fr_port" "echo $CODE"
    fr_cmd="$freeradius_bin -f -d $fr -l stdout"
fi

# ------------------------------------------------------------ smsotp-radiusd
start_smsotp() { # name [store-table [phones]]; sets sms_pid, sms_port, sms_dir
    sms_dir="$work/$1"
    mkdir -p "$sms_dir"
    cp "$work/secret" "$sms_dir/secret"
    cp "${3:-$work/phones.toml}" "$sms_dir/phones.toml"
    chmod 0644 "$sms_dir/phones.toml"
    sms_port=$("$radload" --free-udp-port)
    bench_config "$sms_dir" "$sms_port" "$WORKERS" "$AUDIT" "${2:-}"
    if [ "$FILL" = 1 ] && [ "$1" != pending ]; then
        "$fill_windows" "$sms_dir/smsotp.toml" >"$sms_dir/fill.log" 2>&1 ||
            { cat "$sms_dir/fill.log" >&2; die "fill_windows failed for $1"; }
    fi
    "$server" --config "$sms_dir/smsotp.toml" 2>"$sms_dir/stderr.log" &
    sms_pid=$!
    wait_for "$sms_dir/stderr.log" "smsotp-radiusd: ready" "$sms_pid" smsotp-radiusd
    wait_for "$sms_dir/stderr.log" "phone lists checked" "$sms_pid" "smsotp-radiusd's phone-list check"
    sms_cmd="$server --config $sms_dir/smsotp.toml"
}

# ------------------------------------------------------------------- Redis
if [ "$STORE" = redis ]; then
    redis_port=$("$radload" --free-udp-port)
    mkdir -p "$work/redis"
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save "" \
        --appendonly yes --appendfsync everysec --daemonize no >"$work/redis/log" 2>&1 &
    redis_pid=$!
    i=0
    until redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; do
        kill -0 "$redis_pid" 2>/dev/null || { cat "$work/redis/log" >&2; die "redis-server exited"; }
        i=$((i + 1))
        [ "$i" -lt 100 ] || die "redis-server not answering after 10 s"
        sleep 0.1
    done
    redis_version=$(redis-cli -h 127.0.0.1 -p "$redis_port" info server | tr -d '\r' | sed -n 's/^redis_version://p')
    say "redis-server $redis_version on 127.0.0.1:$redis_port (appendonly yes, appendfsync everysec)"
    redis_cmd="redis-server --bind 127.0.0.1 --port $redis_port --dir $work/redis --save '' --appendonly yes --appendfsync everysec"
    # One code key for every instance (the first creates it), as on a real site.
    redis_store() { # key prefix
        printf '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\nkey_prefix = "%s"\n\n[otp]\nkey_file = "%s"\n' \
            "$redis_port" "$1" "$work/redis-otp.key"
    }
    redis_reads() { redis-cli -h 127.0.0.1 -p "$redis_port" info stats | sed -n 's/^total_reads_processed:\([0-9]*\).*/\1/p'; }
    # The append-only file's size and how many times it was rewritten.
    redis_aof() { redis-cli -h 127.0.0.1 -p "$redis_port" info persistence | tr -d '\r' |
        awk -F: '$1 == "aof_current_size" { s = $2 } $1 == "aof_rewrites" { w = $2 } END { printf "%d %d", s, w }'; }
fi

rss() { grep -E '^(VmRSS|VmHWM)' "/proc/$1/status" | tr -s ' \t' ' ' | tr '\n' ' '; }
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }

outbox_code() { printf '%s' "tail -n 1 '$1/outbox.jsonl' | sed -n 's/.*\"message\":\"[^0-9]*\([0-9]\{6,10\}\).*/\\1/p'"; }
if [ "$ONLY" != freeradius ]; then
    start_smsotp throughput
    smoke "$sms_port" "$(outbox_code "$sms_dir")"
    tp_cmd=$sms_cmd
fi
if [ "$STORE" = redis ]; then
    # Its own process beside the SQLite one, so the rounds alternate.
    keep_pid=$sms_pid keep_port=$sms_port keep_dir=$sms_dir
    start_smsotp redis-1 "$(redis_store "bench1:")"
    smoke "$sms_port" "$(outbox_code "$sms_dir")"
    red_pid=$sms_pid red_port=$sms_port red_dir=$sms_dir red_cmd=$sms_cmd
    sms_pid=$keep_pid sms_port=$keep_port sms_dir=$keep_dir
fi

# ------------------------------------------------------------------ rounds
fr_load() { run_load "freeradius-$1" "$fr_port" "$fr_pid" --fixed-code "$CODE"; }
sms_load() { run_load "smsotp-$1" "$sms_port" "$sms_pid" --outbox "$sms_dir/outbox.jsonl" --phones "$sms_dir/phones.toml"; }
red_load() {
    r0=$(redis_reads) c0=$(cpu_ticks "$redis_pid") a0=$(redis_aof)
    run_load "redis-$1" "$red_port" "$red_pid" --outbox "$red_dir/outbox.jsonl" --phones "$red_dir/phones.toml"
    r1=$(redis_reads) c1=$(cpu_ticks "$redis_pid") a1=$(redis_aof)
    # Fields: reads a login, redis-server CPU ms per 1000 flows, AOF
    # bytes a login ("-" when the file was rewritten meanwhile), rewrites.
    awk -v r=$((r1 - r0)) -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v f="$(field "$work/redis-$1.out" completed)" \
        -v a0="$a0" -v a1="$a1" 'BEGIN {
        split(a0, x, " "); split(a1, y, " "); w = y[2] - x[2]
        if (w == 0 && f > 0) b = sprintf("%.0f", (y[1] - x[1]) / f); else b = "-"
        if (f > 0) printf "%.2f %.1f %s %d\n", r / f, c * 1000 / hz * 1000 / f, b, w; else print "- - - 0" }' >"$work/redis-$1.trips"
}
[ "$ONLY" = smsotp ] || warm_up freeradius "$fr_port" --fixed-code "$CODE"
[ "$ONLY" = freeradius ] || warm_up smsotp "$sms_port" --outbox "$sms_dir/outbox.jsonl" --phones "$sms_dir/phones.toml"
[ "$STORE" = sqlite ] || warm_up redis "$red_port" --outbox "$red_dir/outbox.jsonl" --phones "$red_dir/phones.toml"
round=1
while [ "$round" -le "$ROUNDS" ]; do
    if [ $((round % 2)) = 1 ]; then
        [ "$ONLY" = smsotp ] || fr_load "$round"
        [ "$ONLY" = freeradius ] || sms_load "$round"
        [ "$STORE" = sqlite ] || red_load "$round"
    else
        [ "$STORE" = sqlite ] || red_load "$round"
        [ "$ONLY" = freeradius ] || sms_load "$round"
        [ "$ONLY" = smsotp ] || fr_load "$round"
    fi
    round=$((round + 1))
done
if [ "$ONLY" != freeradius ]; then
    sms_after_load="$(rss "$sms_pid")"
    # The WAL is reused from its start after each full checkpoint, never
    # shrunk: its size is the most it held between two checkpoints.
    sms_wal_kb=$(du -k "$sms_dir/state.db-wal" 2>/dev/null | cut -f1)
    cp "$sms_dir/stderr.log" "$work/smsotp-throughput.stderr"
fi
if [ "$STORE" = redis ]; then
    # What the server spent per command, warm-up and rounds together.
    redis-cli -h 127.0.0.1 -p "$redis_port" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1 \2 \3/p' >"$work/redis.cmdstats"
fi
stop

# Three instances on the one Redis, three NASes: a radload each, with a
# third of the flows and of the flows in flight, and users of its own.
if [ "$STORE" = redis ]; then
    three_pids=""
    for k in 1 2 3; do
        "$radload" --users "$USERS" --user-prefix "nas$k" --password "$PASSWORD" \
            --write-phones "$work/phones-nas$k.toml" >/dev/null
        start_smsotp "redis-3-$k" "$(redis_store "bench3:")" "$work/phones-nas$k.toml"
        eval "three_pid_$k=$sms_pid three_port_$k=$sms_port three_dir_$k=$sms_dir"
        three_pids="$three_pids $sms_pid"
        eval "three_cmd_$k=\"\$sms_cmd\""
    done
    for k in 1 2 3; do
        eval "p=\$three_port_$k d=\$three_dir_$k"
        "$radload" --label "redis3-$k-warmup" --target "127.0.0.1:$p" --secret-file "$work/secret" \
            --flows $((WARMUP / 3 + 1)) --duration "$DURATION" --inflight $((INFLIGHT / 3)) --sockets "$SOCKETS" \
            --users "$USERS" --user-prefix "nas$k" --password "$PASSWORD" \
            --outbox "$d/outbox.jsonl" --phones "$d/phones.toml" >"$work/redis3-$k.warmup.out" ||
            { cat "$work/redis3-$k.warmup.out" >&2; die "warm-up run against instance $k failed"; }
    done
    cut -d' ' -f1-3 /proc/loadavg >"$work/redis3.load"
    r0=$(redis_reads)
    for k in 1 2 3; do
        eval "p=\$three_port_$k d=\$three_dir_$k"
        "$radload" --label "redis3-$k" --target "127.0.0.1:$p" --secret-file "$work/secret" \
            --flows $((FLOWS / 3)) --duration "$DURATION" --inflight $((INFLIGHT / 3)) --sockets "$SOCKETS" \
            --users "$USERS" --user-prefix "nas$k" --password "$PASSWORD" \
            --outbox "$d/outbox.jsonl" --phones "$d/phones.toml" >"$work/redis3-$k.out" &
        eval "three_load_$k=\$!"
    done
    for k in 1 2 3; do
        eval "wait \$three_load_$k" || { cat "$work/redis3-$k.out" >&2; die "radload against instance $k failed"; }
    done
    r1=$(redis_reads)
    three_rate=$(for k in 1 2 3; do field "$work/redis3-$k.out" rate; done | awk '{ n += $1 } END { printf "%.1f", n }')
    three_done=$(for k in 1 2 3; do field "$work/redis3-$k.out" completed; done | awk '{ n += $1 } END { print n + 0 }')
    three_trips=$(awk -v r=$((r1 - r0)) -v f="$three_done" 'BEGIN { if (f > 0) printf "%.2f", r / f; else print "-" }')
    stop
fi

if [ "$ONLY" != freeradius ]; then
    start_smsotp pending
    rss_idle="$(rss "$sms_pid")"
    cut -d' ' -f1-3 /proc/loadavg >"$work/pending.load"
    "$radload" --label pending --target "127.0.0.1:$sms_port" --secret-file "$work/secret" \
        --pending "$PENDING" --inflight "$INFLIGHT" --sockets "$SOCKETS" \
        --duration "$DURATION" --password "$PASSWORD" | tee "$work/pending.out"
    sleep 1
    rss_pending="$(rss "$sms_pid")"
    rss_pending_kb=$(rss_kb "$sms_pid")
    # What of it is the program's own file (its code and read-only data)
    # and what is the heap and the rest, from its mappings.
    rss_split=$(awk -v bin="$server" '/^[0-9a-f]+-[0-9a-f]+ / { f = ($6 == bin) }
        /^Rss:/ { if (f) b += $2; else o += $2 }
        END { printf "the program file %.1f MB, the rest %.1f MB", b / 1024, o / 1024 }' "/proc/$sms_pid/smaps")
    pending_cmd=$sms_cmd
    cp "$sms_dir/stderr.log" "$work/smsotp-pending.stderr"
    stop
fi

# ------------------------------------------------------------------ summary
echo
if [ "$MODE" = defaults ]; then
    mode_line="MODE=defaults: smsotp-radiusd audits to syslog (rsyslog), workers at the default; $SOCKETS source socket(s)"
else
    mode_line="MODE=kind (settings no user runs): syslog off, workers=$WORKERS; $SOCKETS source sockets"
fi
if [ "$FILL" = 1 ]; then
    mode_line="$mode_line; stores start with an hour of sends in their windows"
else
    mode_line="$mode_line; FILL=0 (a kinder setting): stores start empty"
fi
echo "=== bench-radius summary ($mode_line; $(nproc) CPUs; $INFLIGHT flows in flight; $ROUNDS rounds of FLOWS=$FLOWS after WARMUP=$WARMUP, cap ${DURATION}s) ==="
fmt_run() { # label
    out="$work/$1.out"
    printf '%-15s %10s flows/s  request p99 %s ms (round one %s, round two %s)  flow p50 %s ms  p99 %s ms  max %s ms  errors %s  repeated States %s  load %s\n' \
        "$1" "$(field "$out" rate)" "$(field "$out" request_p99_ms)" \
        "$(field "$out" round1_p99_ms)" "$(field "$out" round2_p99_ms)" \
        "$(field "$out" p50_ms)" "$(field "$out" p99_ms)" "$(field "$out" max_ms)" \
        "$(field "$out" errors)" "$(field "$out" duplicate_states)" "$(cat "$work/$1.load")"
    printf '%-15s CPU per 1000 flows: server %s ms, rsyslogd %s ms; the machine (all CPUs) busy %s ms, idle %s ms; context switches per flow (machine) %s\n' "" \
        "$(cut -d' ' -f1 "$work/$1.cpu")" "$(cut -d' ' -f2 "$work/$1.cpu")" "$(cut -d' ' -f4 "$work/$1.cpu")" \
        "$(cut -d' ' -f5 "$work/$1.cpu")" "$(cut -d' ' -f3 "$work/$1.cpu")"
}
# Median of the numbers on stdin, one per line.
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# KEY of every round of SERVER, one per line.
each_round() { # server key
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        field "$work/$1-$r.out" "$2"
        r=$((r + 1))
    done
}
# Median over the rounds of field N of SERVER's CPU files.
cpu_median() { # server n
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        cut -d' ' -f"$2" "$work/$1-$r.cpu"
        r=$((r + 1))
    done | median
}
medians() { # server
    printf '%-15s %10s flows/s  request p99 %s ms (round one %s, round two %s)  flow p50 %s ms  p99 %s ms  repeated States %s in all\n' \
        "$1" "$(each_round "$1" rate | median)" "$(each_round "$1" request_p99_ms | median)" \
        "$(each_round "$1" round1_p99_ms | median)" "$(each_round "$1" round2_p99_ms | median)" \
        "$(each_round "$1" p50_ms | median)" "$(each_round "$1" p99_ms | median)" \
        "$(each_round "$1" duplicate_states | awk '{ n += $1 } END { print n + 0 }')"
    printf '%-15s CPU per 1000 flows (median): server %s ms, rsyslogd %s ms; the machine (all CPUs) busy %s ms, idle %s ms; context switches per flow (machine, median) %s\n' "" \
        "$(cpu_median "$1" 1)" "$(cpu_median "$1" 2)" "$(cpu_median "$1" 4)" "$(cpu_median "$1" 5)" "$(cpu_median "$1" 3)"
}
servers=""
[ "$ONLY" = smsotp ] || servers="freeradius"
[ "$ONLY" = freeradius ] || servers="$servers smsotp"
[ "$STORE" = sqlite ] || servers="$servers redis"
round=1
while [ "$round" -le "$ROUNDS" ]; do
    for srv in $servers; do fmt_run "$srv-$round"; done
    round=$((round + 1))
done
echo "medians of the $ROUNDS rounds:"
for srv in $servers; do medians "$srv"; done
if [ "$ONLY" != smsotp ]; then
    echo "    freeradius: $fr_cmd"
    echo "    (FreeRADIUS 3.2.1 is known to hand out a State twice under concurrency; see DESIGN.md)"
fi
if [ "$ONLY" != freeradius ]; then
    echo "    smsotp:     $tp_cmd"
    echo "    smsotp-radiusd after the rounds: $sms_after_load"
    echo "    smsotp-radiusd's WAL after the rounds: ${sms_wal_kb:-?} KB (state.db-wal, its high-water mark)"
fi
echo "    one run:    $(sed -n 's/^  reproduce: //p' "$work/$(echo $servers | cut -d' ' -f1)-1.out")"
if [ -z "$ONLY" ]; then
    ratios=$(r=1; while [ "$r" -le "$ROUNDS" ]; do
        awk -v s="$(field "$work/smsotp-$r.out" rate)" -v f="$(field "$work/freeradius-$r.out" rate)" \
            'BEGIN { if (f > 0 && s > 0) printf "%.4f\n", s / f }'
        r=$((r + 1))
    done)
    m=$(echo "$ratios" | median)
    echo "ratio smsotp/freeradius flows/s, each round: $(echo $ratios)"
    awk -v m="$m" 'BEGIN { printf "ratio smsotp/freeradius flows/s: %s, the median (%s)\n", m, (m >= 1 ? "target met" : "target MISSED") }'
fi
if [ "$STORE" = redis ]; then
    echo "smsotp-radiusd on Redis $redis_version (redis-1: 127.0.0.1:$redis_port, appendonly yes, appendfsync everysec; the rows \"redis\" above):"
    echo "    server:  $red_cmd"
    echo "    redis:   $redis_cmd"
    awk -v f=$((WARMUP + ROUNDS * FLOWS)) '$1 == "evalsha" || $1 == "multi" { n += $2 } END {
        if (f > 0) printf "    store steps per login (EVALSHA and MULTI calls / flows, all one-instance runs): %.2f\n", n / f }' "$work/redis.cmdstats"
    echo "    Redis reads per login (server read events / flows; commands arrive pipelined), each round: $(r=1; while [ "$r" -le "$ROUNDS" ]; do cut -d' ' -f1 "$work/redis-$r.trips"; r=$((r + 1)); done | tr '\n' ' ')"
    echo "    redis-server time per command (INFO commandstats, all one-instance runs): $(awk '$2 > 1000 { printf "%s %s calls %.1f us; ", $1, $2, $3 }' "$work/redis.cmdstats")"
    echo "    redis-server CPU per 1000 flows, each round: $(r=1; while [ "$r" -le "$ROUNDS" ]; do cut -d' ' -f2 "$work/redis-$r.trips"; r=$((r + 1)); done | tr '\n' ' ')ms"
    echo "    AOF bytes per login (INFO persistence aof_current_size growth / flows; - if rewritten), each round: $(r=1; while [ "$r" -le "$ROUNDS" ]; do cut -d' ' -f3 "$work/redis-$r.trips"; r=$((r + 1)); done | tr '\n' ' ')"
    echo "    AOF rewrites (each a fork of redis-server) during the rounds: $(r=1; while [ "$r" -le "$ROUNDS" ]; do cut -d' ' -f4 "$work/redis-$r.trips"; r=$((r + 1)); done | awk '{ n += $1 } END { print n + 0 }')"
    red_ratios=$(r=1; while [ "$r" -le "$ROUNDS" ]; do
        awk -v s="$(field "$work/redis-$r.out" rate)" -v q="$(field "$work/smsotp-$r.out" rate)" \
            'BEGIN { if (q > 0 && s > 0) printf "%.4f\n", s / q }'
        r=$((r + 1))
    done)
    rm_=$(echo "$red_ratios" | median)
    echo "ratio Redis/SQLite flows/s (one smsotp-radiusd each), each round: $(echo $red_ratios)"
    awk -v m="$rm_" 'BEGIN { printf "ratio Redis/SQLite flows/s: %s, the median (target 0.8: %s)\n", m, (m >= 0.8 ? "met" : "MISSED") }'
    # Where the machine's time went. Busy + idle per flow is the CPUs'
    # time over the flows, so 0.8 of SQLite's flows/s is the same as at
    # most SQLite's busy + idle / 0.8 per flow on Redis: the line splits
    # the ratio into what each part of the machine spent.
    awk -v sb="$(cpu_median smsotp 4)" -v si="$(cpu_median smsotp 5)" -v rb="$(cpu_median redis 4)" \
        -v ri="$(cpu_median redis 5)" -v rr="$(cpu_median redis 1)" -v sr="$(cpu_median smsotp 1)" 'BEGIN {
        printf "    the machine (all CPUs) per 1000 flows, medians: SQLite busy %s ms + idle %s ms; Redis busy %s ms + idle %s ms", sb, si, rb, ri
        printf " (smsotp-radiusd %s ms on SQLite, %s ms on Redis; redis-server'"'"'s own above);", sr, rr
        printf " 0.8 of SQLite'"'"'s flows/s is at most %.1f ms busy + idle per 1000 flows on Redis\n", (sb + si) / 0.8 }'
    [ -z "$ONLY" ] && echo "ratio Redis/FreeRADIUS flows/s (median of the rounds): $(r=1; while [ "$r" -le "$ROUNDS" ]; do
        awk -v s="$(field "$work/redis-$r.out" rate)" -v f="$(field "$work/freeradius-$r.out" rate)" \
            'BEGIN { if (f > 0 && s > 0) printf "%.4f\n", s / f }'; r=$((r + 1)); done | median)"
    echo "three smsotp-radiusd instances on the one Redis (three NASes, $((INFLIGHT / 3)) flows in flight each, load before: $(cat "$work/redis3.load")):"
    for i in 1 2 3; do
        printf '    instance %s: %s flows/s, %s flows, request p99 %s ms, errors %s\n' "$i" \
            "$(field "$work/redis3-$i.out" rate)" "$(field "$work/redis3-$i.out" completed)" \
            "$(field "$work/redis3-$i.out" request_p99_ms)" "$(field "$work/redis3-$i.out" errors)"
    done
    echo "    together: $three_rate flows/s; Redis reads per login $three_trips"
    echo "    instance 1: $three_cmd_1"
fi
if [ "$ONLY" != freeradius ]; then
    # The target is a request's p99: the time a NAS waits for an answer.
    # A flow is two requests one after the other (and the code lookup).
    awk -v q="$(each_round smsotp request_p99_ms | median)" -v r1="$(each_round smsotp round1_p99_ms | median)" \
        -v r2="$(each_round smsotp round2_p99_ms | median)" -v t="$P99_TARGET_MS" 'BEGIN {
        printf "request p99 vs the %s ms target (median of the rounds): %.3f ms (%s); round one %.3f ms, round two %.3f ms\n",
            t, q, (q <= t ? "met" : "MISSED"), r1, r2 }'
    if [ -z "$ONLY" ]; then
        echo "whole two-round flow p99 (two requests back to back; median of the rounds): smsotp $(each_round smsotp p99_ms | median) ms, freeradius $(each_round freeradius p99_ms | median) ms"
    fi
    echo "pending: $(sed -n 's/^  challenges *//p' "$work/pending.out")  errors $(field "$work/pending.out" errors)  (load average before: $(cat "$work/pending.load"))"
    echo "    idle:                  $rss_idle"
    echo "    with $PENDING pending: $rss_pending($rss_split)"
    awk -v k="$rss_pending_kb" -v t="$RSS_TARGET_KB" 'BEGIN {
        printf "VmRSS vs the 30 MB target: %.1f MB (%s)\n", k / 1024, (k <= t ? "met" : "MISSED") }'
    echo "    server:  $pending_cmd"
    echo "    $(sed -n 's/^  reproduce: //p' "$work/pending.out")"
fi
echo "reproduce all: cd $root && MODE=$MODE FLOWS=$FLOWS WARMUP=$WARMUP ROUNDS=$ROUNDS DURATION=$DURATION INFLIGHT=$INFLIGHT SOCKETS=$SOCKETS USERS=$USERS PENDING=$PENDING FILL=$FILL${ONLY:+ ONLY=$ONLY} STORE=$STORE scripts/bench-radius.sh"
echo "(the per-run commands above use files in $work, which is removed at exit unless KEEP=1)"
