#!/usr/bin/env bash
# Soak the property tests: every `proptest!` test of tests/*.rs, many cases, several random seeds,
# one process per test and seed (`<binary> --exact <test>`), in parallel.
#
#   scripts/soak.sh [--cases N] [--seeds K | --seed-list S1,S2,...] [--jobs J] [--timeout SECS]
#                   [--max-seconds SECS] [--filter REGEX] [--log-dir DIR]
#       build the test binaries with cargo (profile `test`) and soak them here.
#   scripts/soak.sh --prepare DIR
#       build, then copy the binaries, the list of property tests and the test sources (which
#       proptest needs to find its *.proptest-regressions files) into DIR, for a machine without cargo.
#   scripts/soak.sh --bin-dir DIR [same options as the first form]
#       soak the binaries of a folder made by --prepare; needs only bash and coreutils.
#
# --max-seconds caps the time of one run: each test first runs 100 cases (a probe), and a test whose
# probe says that N cases would take longer runs fewer, as many as fit; the summary names it and its
# count. --timeout kills a run that takes longer than SECS (reported as TIMEOUT, a failure).
#
# Each run draws its seed at random (or takes one from --seed-list) and prints it with the command
# that reproduces it: PROPTEST_CASES=N PROPTEST_RNG_SEED=S <binary> --exact <test>. A failure keeps
# proptest's whole output (the minimal failing case is in it) in the log folder, and proptest adds
# the case to the test's *.proptest-regressions file. The summary gives the cases and the time per
# test and in total; the exit status is non-zero if any run failed or ran out of time.
set -euo pipefail

cases=10000
seeds=4
seed_list=""
jobs=$(nproc 2>/dev/null || echo 2)
timeout_s=0
max_seconds=0
probe_cases=100
filter=""
log_dir=""
bin_dir=""
prepare_dir=""

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
need() { [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cases) need "$@"; cases=$2; shift 2 ;;
        --seeds) need "$@"; seeds=$2; shift 2 ;;
        --seed-list) need "$@"; seed_list=$2; shift 2 ;;
        --jobs) need "$@"; jobs=$2; shift 2 ;;
        --timeout) need "$@"; timeout_s=$2; shift 2 ;;
        --max-seconds) need "$@"; max_seconds=$2; shift 2 ;;
        --filter) need "$@"; filter=$2; shift 2 ;;
        --log-dir) need "$@"; log_dir=$2; shift 2 ;;
        --bin-dir) need "$@"; bin_dir=$2; shift 2 ;;
        --prepare) need "$@"; prepare_dir=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for v in cases seeds jobs timeout_s max_seconds; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: --${v%_s} must be a whole number, got '${!v}'" >&2; exit 2; }
done
[[ $jobs -ge 1 ]] || jobs=1

root=$(cd "$(dirname "$0")/.." && pwd)

# The names of the property tests of one test source: the `#[test] fn`s inside `proptest! { }` blocks.
property_fns() {
    awk '
        !inblock && /(^|[^A-Za-z_:])(proptest::)?proptest! *\{/ { inblock = 1; depth = 0; sawtest = 0 }
        inblock {
            line = $0
            sub(/\/\/.*/, "", line)
            if (line ~ /#\[test\]/) sawtest = 1
            if (sawtest && match(line, /fn [A-Za-z_][A-Za-z0-9_]*/)) {
                print substr(line, RSTART + 3, RLENGTH - 3); sawtest = 0
            }
            nopen = gsub(/\{/, "{", line); nclose = gsub(/\}/, "}", line); depth += nopen - nclose
            if (depth <= 0) inblock = 0
        }' "$1"
}

# Build with cargo and write "<target> <executable> <source>" lines for the tests/*.rs binaries that
# hold property tests.
build_binaries() {
    local selection=()
    for src in "$root"/tests/*.rs; do
        if grep -q 'proptest!' "$src"; then selection+=(--test "$(basename "$src" .rs)"); fi
    done
    echo "building the test binaries (cargo test --no-run ${selection[*]}, profile test)" >&2
    (cd "$root" && cargo test --no-run "${selection[@]}" --message-format=json-render-diagnostics) |
        grep '"reason":"compiler-artifact"' | grep '"kind":\["test"\]' | grep '"executable":"' |
        sed 's/.*"target":{[^}]*"name":"\([^"]*\)","src_path":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \3 \2/'
}

# "<target> <test name>" for each property test of the binaries listed on stdin.
list_property_tests() {
    while read -r name exe src; do
        case "$src" in "$root"/tests/*.rs) ;; *) continue ;; esac
        grep -q 'proptest!' "$src" || continue
        fns=$(property_fns "$src" | sort -u)
        [[ -n $fns ]] || continue
        "$exe" --list 2>/dev/null | sed -n 's/: test$//p' | while read -r t; do
            if grep -qx "${t##*::}" <<<"$fns"; then printf '%s %s\n' "$name" "$t"; fi
        done
    done
}

if [[ -n $prepare_dir ]]; then
    mkdir -p "$prepare_dir/bin" "$prepare_dir/root/tests"
    built=$(build_binaries)
    list_property_tests <<<"$built" >"$prepare_dir/tests.txt"
    for name in $(cut -d' ' -f1 "$prepare_dir/tests.txt" | sort -u); do
        cp "$(awk -v n="$name" '$1 == n { print $2 }' <<<"$built")" "$prepare_dir/bin/$name"
        # Debug info is most of a test binary; the soak needs the code and the symbols only.
        strip --strip-debug "$prepare_dir/bin/$name" 2>/dev/null || true
    done
    cp "$root"/tests/*.rs "$prepare_dir/root/tests/"
    cp "$root"/tests/*.proptest-regressions "$prepare_dir/root/tests/" 2>/dev/null || true
    cp "$0" "$prepare_dir/soak.sh"
    echo "$(wc -l <"$prepare_dir/tests.txt") property tests in $(ls "$prepare_dir/bin" | wc -l) binaries;" \
        "run them with: $prepare_dir/soak.sh --bin-dir $prepare_dir" >&2
    exit 0
fi

if [[ -n $bin_dir ]]; then
    bin_dir=$(cd "$bin_dir" && pwd)
    [[ -f $bin_dir/tests.txt ]] || { echo "error: $bin_dir/tests.txt: not found (make the folder with --prepare)" >&2; exit 2; }
    tests=$(cat "$bin_dir/tests.txt")
    exe_of() { printf '%s\n' "$bin_dir/bin/$1"; }
    work_dir=$bin_dir/root
else
    built=$(build_binaries)
    tests=$(list_property_tests <<<"$built")
    exe_of() { awk -v n="$1" '$1 == n { print $2 }' <<<"$built"; }
    work_dir=$root
fi
if [[ -n $filter ]]; then tests=$(grep -E -- "$filter" <<<"$tests" || true); fi
[[ -n $tests ]] || { echo "error: no property tests to run" >&2; exit 2; }

if [[ -z $seed_list ]]; then
    seed_list=$(for _ in $(seq "$seeds"); do od -An -N4 -tu4 /dev/urandom | tr -d ' '; done | paste -sd, -)
fi
log_dir=${log_dir:-$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")}
mkdir -p "$log_dir"
: >"$log_dir/results.txt"

echo "soak: $(wc -l <<<"$tests") property tests x seeds $seed_list at $cases cases, $jobs jobs;" \
    "logs in $log_dir; CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"

run_one() {
    local name=$1 t=$2 seed=$3 exe=$4 cases=$5
    local log="$log_dir/$name.${t//::/.}.$seed.log"
    local start end status=PASS code=0
    start=$(date +%s.%N)
    if [[ $timeout_s -gt 0 ]]; then
        (cd "$work_dir" && PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed \
            timeout "$timeout_s" "$exe" --exact "$t" --test-threads=1) >"$log" 2>&1 || code=$?
    else
        (cd "$work_dir" && PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed \
            "$exe" --exact "$t" --test-threads=1) >"$log" 2>&1 || code=$?
    fi
    end=$(date +%s.%N)
    if [[ $code -eq 124 ]]; then status=TIMEOUT; elif [[ $code -ne 0 ]]; then status=FAIL; fi
    # A test that ran nothing (renamed, filtered away) must not read as a pass.
    if [[ $status == PASS ]] && ! grep -q '^test result: ok. 1 passed' "$log"; then status=NOTRUN; fi
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    printf '%s %s %s %s %s %s\n' "$status" "$secs" "$name" "$t" "$seed" "$cases" >>"$log_dir/results.txt"
    printf '%-7s %7ss  %s %s  seed %s  %s cases\n' "$status" "$secs" "$name" "$t" "$seed" "$cases"
    if [[ $status != PASS ]]; then
        printf '        reproduce: PROPTEST_CASES=%s PROPTEST_RNG_SEED=%s %s --exact %s\n' \
            "$cases" "$seed" "$exe" "$t"
        printf '        log: %s\n' "$log"
    fi
}
export -f run_one
export log_dir work_dir timeout_s

start_all=$(date +%s)
# The probe: $probe_cases cases of each test (first seed) give its time per case.
declare -A cases_of
probe_failed=0
if [[ $max_seconds -gt 0 ]]; then
    first_seed=${seed_list%%,*}
    mkdir -p "$log_dir/probe"
    : >"$log_dir/probe/results.txt"
    while read -r name t; do
        printf '%s %s %s %s %s\n' "$name" "$t" "$first_seed" "$(exe_of "$name")" "$probe_cases"
    done <<<"$tests" >"$log_dir/probe/jobs.txt"
    echo "probe: $probe_cases cases of each test, seed $first_seed"
    log_dir=$log_dir/probe xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ <"$log_dir/probe/jobs.txt" >/dev/null
    while read -r status secs name t seed n; do
        per_case=$(awk -v s="$secs" -v n="$n" 'BEGIN { printf "%.6f", s / n }')
        fit=$(awk -v m="$max_seconds" -v p="$per_case" -v c="$cases" 'BEGIN { f = int(m / (p > 0 ? p : 1e-9)); print (f < c ? f : c) }')
        floor=$((probe_cases < cases ? probe_cases : cases))
        [[ $fit -ge $floor ]] || fit=$floor
        cases_of["$name $t"]=$fit
        if [[ $fit -lt $cases ]]; then
            echo "  $name $t: ${per_case}s per case in the probe; $fit cases fit in $max_seconds s (of $cases)"
        fi
        if [[ $status != PASS ]]; then echo "  probe $status: $name $t (seed $seed; log in $log_dir/probe/)"; probe_failed=1; fi
    done <"$log_dir/probe/results.txt"
fi

# One job per line: "<target> <test> <seed> <executable> <cases>".
jobs_file=$log_dir/jobs.txt
: >"$jobs_file"
while read -r name t; do
    exe=$(exe_of "$name")
    n=${cases_of["$name $t"]:-$cases}
    for s in ${seed_list//,/ }; do printf '%s %s %s %s %s\n' "$name" "$t" "$s" "$exe" "$n" >>"$jobs_file"; done
done <<<"$tests"
xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ <"$jobs_file"
end_all=$(date +%s)

echo
echo "per test (cases passed, summed over its seeds; time summed over its runs):"
sort -k3,4 "$log_dir/results.txt" | awk '
    { key = $3 " " $4; runs[key]++; secs[key] += $2; per[key] = $6
      if ($1 == "PASS") { ok[key]++; passed[key] += $6 } else bad[key] = bad[key] " " $1 "@seed" $5 }
    END {
        for (k in runs) {
            printf "  %-72s %d/%d seeds ok x %6d = %7d cases  %8.1fs%s\n", k, ok[k], runs[k], per[k], passed[k], secs[k], bad[k]
            total_cases += passed[k]; total_secs += secs[k]; total_runs += runs[k]; total_ok += ok[k]
        }
        printf "~total: %d/%d runs ok, %d cases, %.1f s of test time\n", total_ok, total_runs, total_cases, total_secs
    }' | sort | sed 's/^~//'
echo "wall time: $((end_all - start_all)) s on $jobs jobs; seeds $seed_list"

failed=$(grep -vc '^PASS ' "$log_dir/results.txt" || true)
failed=$((failed + probe_failed))
if [[ $failed -gt 0 ]]; then
    echo
    echo "$failed run(s) failed; proptest's output of each (the minimal failing input is in it):"
    grep -v '^PASS ' "$log_dir/results.txt" | while read -r status secs name t seed n; do
        echo "--- $status $name $t seed $seed"
        grep -v '^\(running\|test result\|$\)' "$log_dir/$name.${t//::/.}.$seed.log" | tail -40
    done
    exit 1
fi
