#!/usr/bin/env bash
# Fuzzes smsotp's decoders with libFuzzer on the stable toolchain (see
# docs/fuzzing.md for why this and not cargo-fuzz).
#
#   scripts/fuzz.sh list                 the targets
#   scripts/fuzz.sh build                build every target (instrumented)
#   scripts/fuzz.sh TARGET SECONDS [--save] [-- LIBFUZZER_ARGS…]
#   scripts/fuzz.sh all SECONDS [--save] each target in turn
#   scripts/fuzz.sh minimize TARGET      merge TARGET's corpus down to the
#                                        inputs that add coverage
#
# A run starts from fuzz/corpus/TARGET; what it finds goes to a scratch
# directory (printed), or into fuzz/corpus/TARGET with --save. Crashes go
# to fuzz/artifacts/TARGET/ (not in git), with the command to reproduce.
# Exits non-zero if any run found a crash, leak or timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

targets=(radius_request radius_user_password radius_triage smpp_pdu http_success_body config phone ldap_message pam_conversation)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Stable codegen flags only (no -Z, no RUSTC_BOOTSTRAP): LLVM's
# SanitizerCoverage pass with libFuzzer's counters, PC table and compare
# tracing; debug assertions and overflow checks come with the `fuzz`
# profile (Cargo.toml). An explicit --target
# keeps RUSTFLAGS off build scripts and proc macros (which must not be
# instrumented: the compiler loads them), and a target dir of its own
# keeps the instrumented objects away from the normal build.
host=$(rustc -vV | sed -n 's/^host: //p')
fuzz_target_dir=$root/target/fuzz
bin_dir=$fuzz_target_dir/$host/fuzz
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cforce-frame-pointers=yes"

build() {
  local bins=()
  for t in "$@"; do bins+=(--bin "$t"); done
  command -v c++ >/dev/null || { echo "fuzz.sh: libFuzzer is C++: install g++ (scripts/deps.sh fuzz)" >&2; exit 1; }
  cargo build --locked --profile fuzz -p smsotp-fuzz --features libfuzzer \
    --target "$host" --target-dir "$fuzz_target_dir" "${bins[@]}"
}

known() {
  local t
  for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done
  echo "fuzz.sh: no target '$1'; targets: ${targets[*]}" >&2
  exit 2
}

# run TARGET SECONDS SAVE [LIBFUZZER_ARGS…]
run() {
  local t=$1 secs=$2 save=$3; shift 3
  local corpus=$root/fuzz/corpus/$t
  local artifacts=$root/fuzz/artifacts/$t
  mkdir -p "$artifacts"
  local out=$corpus
  if [ "$save" != yes ]; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/smsotp-fuzz-$t.XXXXXX")
  fi
  local log
  log=$(mktemp "${TMPDIR:-/tmp}/smsotp-fuzz-$t.log.XXXXXX")
  echo "== $t: ${secs}s from fuzz/corpus/$t; new inputs into $out; log $log" >&2
  local rc=0
  # The first corpus dir receives new inputs; the repo's is read-only
  # unless --save. -rss_limit_mb bounds memory, -timeout a slow input.
  "$bin_dir/$t" "$out" "$corpus" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)' "$log" >&2 || true
  if [ $rc -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "== $t: FINDING (exit $rc). Reproduce with:" >&2
    for a in "$artifacts"/*; do
      [ -f "$a" ] && echo "   $bin_dir/$t $a" >&2
    done
    echo "   or: RUST_BACKTRACE=1 cargo test -p smsotp-fuzz (after copying the input into fuzz/corpus/$t/)" >&2
    return 1
  fi
  echo "== $t: no finding" >&2
}

[ $# -ge 1 ] || usage
case "$1" in
  list) printf '%s\n' "${targets[@]}" ;;
  build) build "${targets[@]}" ;;
  minimize)
    [ $# -eq 2 ] || usage
    known "$2"
    build "$2"
    corpus=$root/fuzz/corpus/$2
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/smsotp-fuzz-min.XXXXXX")
    "$bin_dir/$2" -merge=1 -max_len=8192 -timeout=10 "$tmp" "$corpus"
    rm -f "$corpus"/*
    cp "$tmp"/* "$corpus"/
    rm -rf "$tmp"
    echo "fuzz/corpus/$2: $(ls "$corpus" | wc -l) files" >&2
    ;;
  *)
    [ $# -ge 2 ] || usage
    which=$1 secs=$2; shift 2
    [[ $secs =~ ^[0-9]+$ ]] || usage
    save=no
    if [ "${1:-}" = --save ]; then save=yes; shift; fi
    [ "${1:-}" = -- ] && shift
    if [ "$which" = all ]; then
      build "${targets[@]}"
      failed=()
      for t in "${targets[@]}"; do run "$t" "$secs" "$save" "$@" || failed+=("$t"); done
      if [ ${#failed[@]} -gt 0 ]; then
        echo "fuzz.sh: findings in: ${failed[*]}" >&2
        exit 1
      fi
    else
      known "$which"
      build "$which"
      run "$which" "$secs" "$save" "$@"
    fi
    ;;
esac
