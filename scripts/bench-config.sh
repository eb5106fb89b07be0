# Sourced by the bench scripts: the smsotp.toml they run smsotp-radiusd
# with (challenge mode, no password check, limits out of the way, phone
# list, outbox and store in DIR, syslog off), and the helpers they share
# (wait_for, field; the caller defines die).
#
#   bench_config DIR PORT WORKERS   # writes DIR/smsotp.toml (0600)
bench_config() {
    cat >"$1/smsotp.toml" <<EOF_CONF
[radius]
listen = ["127.0.0.1:$2"]
primary = { kind = "none" }
workers = $3

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

[store]
kind = "sqlite"
path = "$1/state.db"

[audit]
syslog = false
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
