"""How long descriptions are in CLIP tokens, and how ``clip.long_text=chunks`` splits them (docs/clip.md).

    python scripts/experiments/clip_token_lengths.py runs/world/texts.jsonl [more texts.jsonl or .txt files]

A ``.jsonl`` file holds GeoLoc records ({"place_id", "texts": [...]}); any other file holds one text per line
(e.g. captions pulled from GeoText-1652's JSON with ``jq -r '.[].caption'``). Counts use CLIP's BPE as open_clip
ships it, without the start and end markers; CLIP reads 75 of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from geobridge.models.clip.tokens import OpenClipTokens
from geobridge.text_runs import pack_runs, sentences

LIMIT = 75  # CLIP's 77-token context without its start and end markers


def read_texts(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [t for line in path.read_text().splitlines() if line.strip() for t in json.loads(line)["texts"]]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    tokens = OpenClipTokens(context_length=LIMIT + 2)
    for path in args.files:
        texts = read_texts(path)
        counts = np.array([tokens.count(t) for t in texts])
        runs, owner = pack_runs(texts, count=tokens.count, limit=LIMIT)
        per_text = np.bincount(owner, minlength=len(texts))
        longest_sentence = max(tokens.count(s) for t in texts for s in sentences(t))
        print(f"{path}: {len(texts)} texts; CLIP tokens mean {counts.mean():.1f}, median {np.median(counts):.0f}, "
              f"p90 {np.percentile(counts, 90):.0f}, max {counts.max()}; "
              f"over {LIMIT}: {100 * (counts > LIMIT).mean():.1f} %"
              f"; runs per text with chunks: mean {per_text.mean():.2f}, max {per_text.max()}; "
              f"longest sentence {longest_sentence} tokens")


if __name__ == "__main__":
    main()
