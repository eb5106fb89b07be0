#!/usr/bin/env bash
# The main job on embedded defaults: build pam_smsotp.so and walk one full
# login -- password, then a code sent by SMS -- through the real PAM library
# (pamtester under pam_wrapper). No system PAM file is touched and no SMS
# account is needed: the code goes to a local outbox file you can read.
#
# With a terminal you type the password and the code yourself (the SMS is
# printed as it arrives). Without one (CI, a pipe), the script answers both
# and exits 0 on a successful login.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh demo
cargo build --release --locked -p pam_smsotp
module=$root/target/release/libpam_smsotp.so

demo=${SMSOTP_DEMO_DIR:-/tmp/smsotp-demo}
rm -rf "$demo"
mkdir -p "$demo/pam.d"
chmod 755 "$demo"
user=demo
password=demo-password
service=smsotp-demo

# Everything but the file locations is the embedded default.
cat >"$demo/smsotp.toml" <<TOML
[store]
path = "$demo/state.db"

[[directory]]
kind = "file"
path = "$demo/phones.toml"

[[provider]]
kind = "outbox"
path = "$demo/outbox.jsonl"

[audit]
syslog = false
file = "$demo/audit.jsonl"
TOML
chmod 600 "$demo/smsotp.toml"
echo "$user = \"+12025550123\"" >"$demo/phones.toml"
echo "$user:$password:$service" >"$demo/passdb"
cat >"$demo/pam.d/$service" <<PAM
auth requisite /usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/pam_wrapper/pam_matrix.so passdb=$demo/passdb
auth required  $module config=$demo/smsotp.toml
PAM
touch "$demo/outbox.jsonl"
chmod 600 "$demo/outbox.jsonl"

run_pamtester() {
  LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$demo/pam.d" \
    pamtester -v "$service" "$user" authenticate
}

latest_code() {
  python3 -c 'import json,re,sys
lines=[l for l in open(sys.argv[1]) if l.strip()]
m=re.search(r"\b[0-9A-Z]{6,10}\b", json.loads(lines[-1])["message"]) if lines else None
print(m.group(0) if m else "")' "$demo/outbox.jsonl"
}

echo "smsotp demo: state, config and outbox in $demo"
echo "  config:  $demo/smsotp.toml (embedded defaults, local paths)"
echo "  PAM:     $demo/pam.d/$service (password via pam_matrix, then pam_smsotp)"
echo "  outbox:  $demo/outbox.jsonl (one JSON line per SMS)"
echo

if [ -t 0 ] && [ -t 1 ]; then
  echo "Log in as '$user' with password '$password'; the SMS appears below."
  tail -n0 -F "$demo/outbox.jsonl" 2>/dev/null | while read -r line; do
    printf '\n  [SMS] %s\n' "$line"
  done &
  tailer=$!
  trap 'kill $tailer 2>/dev/null || true' EXIT
  run_pamtester
  exit $?
fi

# No terminal: answer the prompts ourselves, one at a time (pamtester reads
# each answer with a single read()).
fifo=$demo/answers
mkfifo "$fifo"
out=$demo/transcript
run_pamtester <"$fifo" >"$out" 2>&1 &
pid=$!
exec 3>"$fifo"
wait_for() { # pattern, seconds
  for _ in $(seq 1 $(($2 * 20))); do grep -q "$1" "$out" && return 0; sleep 0.05; done
  echo "demo: timed out waiting for '$1'" >&2; cat "$out" >&2; kill $pid 2>/dev/null; return 1
}
wait_for 'Password' 20
echo "$password" >&3
wait_for 'SMS code' 20
code=$(latest_code)
echo "  [SMS] $(tail -n1 "$demo/outbox.jsonl")"
echo "$code" >&3
exec 3>&-
status=0
wait $pid || status=$?
grep -v '^PWRAP_' "$out" || true
if [ $status -eq 0 ] && grep -q 'successfully authenticated' "$out"; then
  echo "demo: login with an SMS code succeeded"
else
  echo "demo: login FAILED (exit $status)" >&2
  exit 1
fi
