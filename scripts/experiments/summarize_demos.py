"""The README's results table from finished demo folders: each world's R@1 per direction and condition, mean +- sd.

    python scripts/experiments/summarize_demos.py runs/demo runs/demo-s1 runs/demo-s2

Reads ``<demo>/report/metrics.json``, ``<demo>/fusion.json`` and ``<demo>/summary.json`` (stage times), and, where
``scripts/experiments/levers.py`` was run on the folder, ``<demo>/results.json`` (re-estimated statistics).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROWS = (
    ("drone -> satellite", "drone->satellite/R@1"),
    ("satellite -> drone", "satellite->drone/R@1"),
    ("street -> satellite", "street->satellite/R@1"),
    ("satellite -> street", "satellite->street/R@1"),
    ("street -> drone", "street->drone/R@1"),
    ("drone -> street", "drone->street/R@1"),
    ("text -> satellite", "text->satellite/R@1"),
    ("text -> drone", "text->drone/R@1"),
    ("text -> street", "text->street/R@1"),
    ("mean of all 12 directions", "mean/R@1"),
    ("drone -> satellite R@10", "drone->satellite/R@10"),
    ("drone -> satellite, in-domain queries", "in_domain/drone->satellite/R@1"),
    ("drone -> satellite, held-out countries", "out_of_domain/drone->satellite/R@1"),
    ("drone -> satellite, blurred drone photos (2 px)", "robust/drone-blur-2px/drone->satellite/R@1"),
    ("drone -> satellite, x4 low-resolution tiles", "robust/satellite-lowres-x4/drone->satellite/R@1"),
    ("drone -> satellite, winter tiles", "robust/satellite-winter/drone->satellite/R@1"),
)
FUSION = (
    ("localise: one drone photo", "drone/R@1"),
    ("localise: drone + street + text, weighted fusion", "drone+street+text/weighted/R@1"),
    ("localise: drone + street + text, score fusion", "drone+street+text/score/R@1"),
    ("localise: four drone photos, score fusion", "drone*4/score/R@1"),
)


def main() -> None:
    folders = [Path(p) for p in sys.argv[1:]]
    if not folders:
        raise SystemExit(__doc__)
    metrics = [json.loads((f / "report" / "metrics.json").read_text()) for f in folders]
    fusion = [json.loads((f / "fusion.json").read_text()) for f in folders]
    print("| R@1 (%) | " + " | ".join(f.name for f in folders) + " | mean ± sd |")
    print("|---|" + "---:|" * (len(folders) + 1))
    for label, key in ROWS:
        _row(label, [m.get(key) for m in metrics])
    for label, key in FUSION:
        _row(label, [f.get(key) for f in fusion])
    checks = [f / "results.json" for f in folders]
    if all(c.is_file() for c in checks):
        for label, key in ROWS[:9]:
            deltas = []
            for c in checks:
                r = json.loads(c.read_text())
                deltas.append(r["test_reestimated"][key] - r["test"][key])
            _row(f"re-estimated statistics minus as trained: {label}", deltas, signed=True)
    for f in folders:
        summary = json.loads((f / "summary.json").read_text())
        print(f"{f.name}: stage seconds {summary['timings']}")


def _row(label: str, values: list[float | None], *, signed: bool = False) -> None:
    present = [float(v) for v in values if v is not None]
    fmt = "{:+.1f}" if signed else "{:.1f}"
    cells = [fmt.format(float(v)) if v is not None else "–" for v in values]
    if len(present) >= 2:
        summary = f"**{fmt.format(statistics.mean(present))} ± {statistics.stdev(present):.1f}**"
    else:
        summary = "–"
    print(f"| {label} | " + " | ".join(cells) + f" | {summary} |")


if __name__ == "__main__":
    main()
