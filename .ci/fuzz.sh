#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS (default 20) with a fixed libFuzzer
# seed (FUZZ_SEED, default 1), starting from its committed seed corpus (fuzz/corpus-seed/TARGET/) and
# regressions (fuzz/regressions/TARGET/). Installs cargo-fuzz if it is missing. Works with the stable
# toolchain alone: without nightly, cargo-fuzz's unstable compiler flags are allowed through
# RUSTC_BOOTSTRAP=1 and the targets run without a sanitizer (libFuzzer's coverage guidance and the
# harnesses' own checks; overflow checks and debug assertions stay on).
#
# A crash fails the script; the input is left in fuzz/artifacts/TARGET/. Keep it as a regression:
# copy it into fuzz/regressions/TARGET/ (tests/fuzz_replay.rs then replays it in every `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
seed="${FUZZ_SEED:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# The default toolchain (FUZZ_TOOLCHAIN=nightly to pick another). cargo-fuzz passes unstable
# compiler flags; a stable compiler accepts them with RUSTC_BOOTSTRAP=1.
toolchain=()
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then toolchain=("+$FUZZ_TOOLCHAIN"); fi
if ! cargo "${toolchain[@]}" --version | grep -q nightly; then export RUSTC_BOOTSTRAP=1; fi
# The same build everywhere (CI has no nightly, so no sanitizer), unless asked otherwise.
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions)

start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
built=$(date +%s)
echo "built the fuzz targets in $((built - start)) s"

scratch=fuzz/target/ci-corpus
summary=()
for target in $(cargo "${toolchain[@]}" fuzz list); do
    corpus="$scratch/$target"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    for saved in "fuzz/corpus-seed/$target" "fuzz/regressions/$target"; do
        if [[ -d $saved ]]; then cp "$saved"/* "$corpus"/ 2>/dev/null || true; fi
    done
    t0=$(date +%s)
    log="fuzz/target/ci-$target.log"
    if ! cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -60 "$log"
        echo "fuzz target $target failed (seed $seed); the input is in fuzz/artifacts/$target/:"
        echo "copy it into fuzz/regressions/$target/ once fixed"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    summary+=("$target: ${runs:-?} runs in $(($(date +%s) - t0)) s, clean")
done
echo "fuzzing (seed $seed, ${seconds} s per target; build $((built - start)) s, total $(($(date +%s) - start)) s):"
printf '  %s\n' "${summary[@]}"
