# Sourced by the bench scripts: the smsotp.toml they run smsotp-radiusd
# with (challenge mode, no password check, limits out of the way, phone
# list, outbox and store in DIR), a syslog daemon as on any Debian host,
# and the helpers they share (wait_for, field; the caller defines die and
# say).
#
#   bench_config DIR PORT WORKERS [AUDIT] [STORE]   # writes DIR/smsotp.toml (0600)
#
# AUDIT "default" (the default) leaves [audit] out: the product's default,
# audit lines to syslog. AUDIT "off" turns syslog off, a kinder setting no
# user runs; figures measured so are labelled as such. WORKERS "default"
# leaves the key out. STORE is a [store] table; the default is SQLite in
# DIR/state.db.
bench_config() {
    if [ "$3" = default ]; then workers_line=""; else workers_line="workers = $3"; fi
    if [ "${4:-default}" = off ]; then audit_table="[audit]
syslog = false"; else audit_table=""; fi
    store_table=${5:-}
    [ -n "$store_table" ] || store_table=$(printf '[store]\nkind = "sqlite"\npath = "%s"\n' "$1/state.db")
    cat >"$1/smsotp.toml" <<EOF_CONF
[radius]
listen = ["127.0.0.1:$2"]
primary = { kind = "none" }
$workers_line

[[radius.client]]
name = "bench"
address = "127.0.0.1"
secret_file = "$1/secret"
mode = "challenge"

[limits]
sms_per_user = "1000000/1h"
sms_global = "100000000/1h"
lockout_after = 1000

[[directory]]
kind = "file"
path = "$1/phones.toml"

[[provider]]
kind = "outbox"
path = "$1/outbox.jsonl"

$store_table

$audit_table
EOF_CONF
    chmod 0600 "$1/smsotp.toml"
}

# Waits until FILE contains PATTERN, or PID died, or 30 s passed.
wait_for() {
    file=$1 pattern=$2 pid=$3 what=$4
    i=0
    while ! grep -q "$pattern" "$file" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$file" >&2 || true
            die "$what exited before it was ready (log above)"
        fi
        i=$((i + 1))
        [ "$i" -lt 300 ] || { tail -n 30 "$file" >&2; die "$what not ready after 30 s"; }
        sleep 0.1
    done
}

# A value of a RESULT line: field FILE KEY.
field() { sed -n "s/^RESULT .* $2=\([^ ]*\).*/\1/p" "$1" | tail -n 1; }

# Makes sure a syslog daemon reads /dev/log, as on any Debian host:
# installs rsyslog when missing, starts it when nothing listens there.
# Sets syslog_pid when it started one (the caller stops it at exit).
syslog_pid=""
start_syslog() {
    if ! dpkg-query -W -f='${Status}' rsyslog 2>/dev/null | grep -q "install ok installed"; then
        say "installing rsyslog (smsotp-radiusd audits to syslog by default)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null
    fi
    # A socket file alone is not a daemon: one that exited leaves
    # /dev/log behind, and every audit line then goes nowhere (a kinder
    # setting than any host runs). Ask it: refused means nobody reads.
    if [ -S /dev/log ] && logger --socket-errors=on -u /dev/log -p user.debug \
        "bench: is a syslog daemon reading /dev/log?" 2>/dev/null; then
        return 0
    fi
    rsyslogd_bin=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
    [ -x "$rsyslogd_bin" ] || die "rsyslogd not found after installing rsyslog"
    rm -f /run/rsyslogd.pid /dev/log
    "$rsyslogd_bin"
    i=0
    while [ ! -S /dev/log ] || [ ! -s /run/rsyslogd.pid ]; do
        i=$((i + 1))
        [ "$i" -lt 100 ] || die "rsyslogd started but /dev/log did not appear within 10 s"
        sleep 0.1
    done
    syslog_pid=$(cat /run/rsyslogd.pid)
    say "started rsyslogd (pid $syslog_pid); stopped again at exit"
}
