#!/usr/bin/env bash
# Thread scaling of the crate against PyTorch CPU eager, from prebuilt bench binaries (the host
# needs bash, python3 with torch, and the corpus; no cargo).
#
#   benches/scaling.sh --prepare DIR
#       on the build machine: `cargo bench --no-run --features parallel` for the train, attention
#       and linear_attention benches, then copy the three binaries into DIR as train, attention,
#       linear_attention, with the Python scripts and the corpus beside them (DIR/benches,
#       DIR/data/shakespeare): DIR is all the other host needs.
#   benches/scaling.sh [--bin-dir DIR] [--threads 1,2,4,8,16] [--rounds R] [--python PY] [--quick]
#       run: first the serial share of the training step (`train --serial-share` at
#       RAYON_NUM_THREADS=1: the part of a step that runs outside parallel regions, and the
#       speed-ups Amdahl's law then allows), then benches/torch_scaling.py, which for each thread
#       count runs the training step (demo S-D model, batch 16 x 128) and causal softmax and linear
#       attention forward + backward (n 2048, 8 heads of 64) with RAYON_NUM_THREADS=t, and PyTorch
#       with torch.set_num_threads(t), in turn, R rounds, and prints one table of medians. Without
#       --bin-dir it takes the newest binaries of target/release/deps. --quick shortens every
#       measurement (a smoke test of the script, not a result).
#
# Results go to DIR/scaling-<host>-<date>.{txt,json} (or target/scaling/ without --bin-dir).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
threads="1,2,4,8,16"
rounds=3
python=${PYTHON:-python3}
quick=0
prepare=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) prepare=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: benches/scaling.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# The newest executable bench binary called NAME-<hash> in target/release/deps.
newest() {
    local found
    found=$(find "$root/target/release/deps" -maxdepth 1 -type f -perm -u+x -name "$1-*" ! -name '*.d' \
        -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
    if [ -z "$found" ]; then
        echo "error: benches/scaling.sh: no $1 bench binary in target/release/deps (build with cargo bench --no-run --features parallel)" >&2
        exit 1
    fi
    echo "$found"
}

if [ -n "$prepare" ]; then
    (cd "$root" && cargo bench --no-run --features parallel --bench train --bench attention --bench linear_attention)
    mkdir -p "$prepare/benches" "$prepare/data"
    for b in train attention linear_attention; do
        cp "$(newest $b)" "$prepare/$b"
    done
    cp "$root"/benches/torch_scaling.py "$root"/benches/torch_train.py "$root"/benches/scaling.sh "$prepare/benches/"
    cp -r "$root/data/shakespeare" "$prepare/data/"
    echo "prepared $prepare: run benches/scaling.sh --bin-dir . there (from inside $prepare)"
    exit 0
fi

if [ -z "$bin_dir" ]; then
    bin_dir="$root/target/scaling/bin"
    mkdir -p "$bin_dir"
    for b in train attention linear_attention; do
        cp "$(newest $b)" "$bin_dir/$b"
    done
    out_dir="$root/target/scaling"
    corpus="$root/data/shakespeare"
else
    bin_dir=$(cd "$bin_dir" && pwd)
    out_dir="$bin_dir"
    corpus="$bin_dir/data/shakespeare"
    [ -d "$corpus" ] || corpus="$root/data/shakespeare"
fi
scripts="$root/benches"
[ -f "$scripts/torch_scaling.py" ] || scripts="$bin_dir/benches"

stamp="$(hostname)-$(date -u +%Y%m%dT%H%M)"
log="$out_dir/scaling-$stamp.txt"
json="$out_dir/scaling-$stamp.json"
if [ "$quick" = 1 ]; then
    steps=5
    criterion="--warm-up-time 0.2 --measurement-time 0.5 --sample-size 10"
    budget=0.2
else
    steps=100
    criterion="--warm-up-time 1 --measurement-time 3"
    budget=2.0
fi

{
    echo "# thread scaling, $(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname)"
    grep -m1 'model name' /proc/cpuinfo || true
    echo "cores: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "## serial share of the training step (one pool thread)"
    SDA_CORPUS="$corpus" RAYON_NUM_THREADS=1 "$bin_dir/train" --serial-share "$steps"
    echo
    echo "## ours against PyTorch eager, $rounds round(s)"
    "$python" "$scripts/torch_scaling.py" --threads "$threads" --bench-dir "$bin_dir" --out-dir "$out_dir/criterion" \
        --corpus "$corpus" --criterion-args "$criterion" --budget "$budget" --rounds "$rounds" --parts --json "$json"
} 2>&1 | tee "$log"
echo
echo "written: $log, $json"
