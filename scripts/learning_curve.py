"""Plot R@1 against a run property (training places, steps) from finished training runs' eval.json files.

    python scripts/learning_curve.py --out docs/scaling_places.png \
        --run 400=runs/abl/t45 --run 1000=runs/abl/scale1000 --run 2800=runs/e1 --xlabel "training places"

Each ``--run X=FOLDER`` is one point at x = X, read from ``FOLDER/eval.json`` (written by ``geobridge train``).
Prints a Markdown table of the same numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DIRECTIONS = ("drone->satellite", "satellite->drone", "street->satellite", "drone->street", "text->satellite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="X=RUN_FOLDER (repeatable)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--xlabel", default="training places")
    parser.add_argument("--logx", action="store_true", help="logarithmic x axis")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for item in args.run:
        x, _, folder = item.partition("=")
        path = Path(folder) / "eval.json"
        if not path.is_file():
            raise SystemExit(f"no eval.json in {folder}")
        points.append((float(x), json.loads(path.read_text())))
    points.sort(key=lambda p: p[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    for direction in DIRECTIONS:
        ax.plot([x for x, _ in points], [m[f"{direction}/R@1"] for _, m in points], marker="o", label=direction)
    ax.set_xlabel(args.xlabel)
    ax.set_ylabel("R@1 (%)")
    if args.logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"| {args.xlabel} | " + " | ".join(DIRECTIONS) + " |")
    print("|---:|" + "---:|" * len(DIRECTIONS))
    for x, m in points:
        print(f"| {x:g} | " + " | ".join(f"{m[f'{d}/R@1']:.1f}" for d in DIRECTIONS) + " |")


if __name__ == "__main__":
    main()
