#!/bin/sh
# Runs the fuzz targets of fuzz/ one after another, each for SECONDS
# (default 600), at the lowest CPU priority, and prints per target the
# minutes, executions and crashes. A benchmark-style run, not part of CI
# (scripts/test.sh does not call it). See fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: header keystore config policy
#   FUZZ_CMIN=1 scripts/fuzz.sh ...           also minimise each corpus afterwards
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libfuzzer-sys needs
# nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
# The exit status is 1 if any target crashed; crashes are in
# fuzz/artifacts/TARGET/ (replay: cargo fuzz run TARGET FILE).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-header keystore config policy}
export RUSTC_BOOTSTRAP=1
tdir=${CARGO_TARGET_DIR:-$root/fuzz/target}
logs=$root/fuzz/logs
mkdir -p "$logs"

# Longest inputs: two 16 KiB chunks for the header target (its largest seed
# is an object of two chunks), a generous file for the TOML loaders.
max_len() {
    case $1 in
        header) echo 40960 ;;
        *) echo 8192 ;;
    esac
}

for t in $targets; do
    [ -d "fuzz/corpus/$t" ] || fuzz/seeds.sh
done
nice -n 19 cargo fuzz build --target-dir "$tdir"

status=0
summary=""
for t in $targets; do
    before=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
    log=$logs/$t.log
    echo "fuzzing $t for ${secs}s (log: $log)"
    rc=0
    nice -n 19 cargo fuzz run --target-dir "$tdir" "$t" -- \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs_run=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    after=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "  $t stopped (status $rc); see $log and fuzz/artifacts/$t/"
        [ "$crashes" -gt 0 ] || crashes="?"
    fi
    if [ "${FUZZ_CMIN:-0}" = 1 ]; then
        nice -n 19 cargo fuzz cmin --target-dir "$tdir" "$t" -- -max_len="$(max_len "$t")" \
            >>"$log" 2>&1
    fi
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    line=$(printf '%-9s %7s min %12s execs %8s crashes %6s corpus files' \
        "$t" "$(awk "BEGIN { printf \"%.1f\", ${secs_run:-0} / 60 }")" "${execs:-?}" \
        "$crashes" "$corpus")
    echo "  $line"
    summary="$summary$line
"
done
printf '\n%s' "$summary"
exit $status
