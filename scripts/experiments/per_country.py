"""drone->satellite R@1 per country of the query place, on a world's test places (all 200 tiles the gallery).

    python scripts/experiments/per_country.py --model runs/demo/run --world runs/demo/world

Tells a held-out country's domain gap apart from its difficulty and from its share of the gallery: the errors that
land on another tile of the query's own country, and R@1 against the true tile and only ``--distractors`` random
tiles of the same country (20 draws per query), the same count for every country.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--world", required=True)
    parser.add_argument("--query", default="drone")
    parser.add_argument("--gallery", default="satellite")
    parser.add_argument("--distractors", type=int, default=3, help="same-country tiles in the matched comparison")
    args = parser.parse_args()

    from geobridge.data import load_places
    from geobridge.eval.embed import embed_places
    from geobridge.models import GeoBridge

    model = GeoBridge.from_pretrained(args.model)
    places = load_places(args.world, split="test")
    sets = embed_places(model, places, views=(args.query, args.gallery), show_progress_bar=False)
    query, gallery = sets[args.query], sets[args.gallery]
    sims = query.embeddings @ gallery.embeddings.T  # (Q, G)
    best = np.argmax(sims, axis=1)  # (Q,)
    g_country = np.array(gallery.countries)
    g_place = np.array(gallery.place_ids)
    rng = np.random.default_rng(0)
    hits: dict[str, list[bool]] = defaultdict(list)
    same_country_errors: dict[str, list[bool]] = defaultdict(list)
    matched: dict[str, list[float]] = defaultdict(list)  # R@1 against the true tile + m same-country tiles
    for i, j in enumerate(best):
        country, place = query.countries[i], query.place_ids[i]
        hits[country].append(place == g_place[j])
        if place != g_place[j]:
            same_country_errors[country].append(g_country[j] == country)
        true = np.flatnonzero(g_place == place)
        others = np.flatnonzero((g_country == country) & (g_place != place))
        if len(true) and len(others) >= args.distractors:
            wins = [sims[i, true].max() > sims[i, rng.choice(others, args.distractors, replace=False)].max()
                    for _ in range(20)]
            matched[country].append(float(np.mean(wins)))
    table = {c: {"queries": len(h), "test places": int(len(set(g_place[g_country == c]))),
                 "R@1": round(100 * float(np.mean(h)), 1),
                 "errors on a same-country tile (%)": round(100 * float(np.mean(same_country_errors[c] or [0])), 1),
                 f"R@1 against {args.distractors} same-country tiles": (round(100 * float(np.mean(matched[c])), 1)
                                                                         if matched[c] else None)}
             for c, h in sorted(hits.items())}
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
