"""Markdown rows of every finished ``levers.py`` run: test R@1, train R@1 (200 training places) and, after
re-estimating each view's statistics, the largest change of any direction and each view's mean cosine.

    python scripts/experiments/levers_table.py runs/levers/*/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DIRECTIONS = ("drone->satellite", "satellite->drone", "street->satellite", "satellite->street", "street->drone",
              "drone->street", "text->satellite", "text->drone", "text->street")


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths:
        raise SystemExit(__doc__)
    short = [d.replace("satellite", "s").replace("street", "st").replace("drone", "d").replace("text", "t")
             for d in DIRECTIONS]
    print("| run | split | " + " | ".join(short) + " | re-estimated: largest change, cosines (d/s/st) | train s |")
    print("|---|---|" + "---:|" * (len(DIRECTIONS) + 2))
    for path in paths:
        r = json.loads(path.read_text())
        name = path.parent.name
        after = r.get("test_reestimated")
        if isinstance(after, dict):
            change = max((after[f"{d}/R@1"] - r["test"][f"{d}/R@1"] for d in DIRECTIONS if f"{d}/R@1" in after),
                         key=abs, default=float("nan"))
            cos = r.get("reestimation_cosine") or {}
            flaw = f"{change:+.1f}; " + "/".join(f"{cos[v]:.3f}" for v in ("drone", "satellite", "street")
                                                  if v in cos)
        else:
            flaw = "–"
        for split in ("test", "train"):
            m = r[split]
            cells = " | ".join(f"{m[f'{d}/R@1']:.1f}" if f"{d}/R@1" in m else "–" for d in DIRECTIONS)
            extra = flaw if split == "test" else ""
            print(f"| {name} | {split} | {cells} | {extra} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
