"""How well the descriptions alone tell the test places apart: each test place's first description retrieves the
place's second description among all test places' second descriptions, with MiniLM's own sentence embeddings
(whole paragraph, and the mean of per-sentence embeddings). A view aligned to the others only through text
carries no more than this.

    python scripts/experiments/description_ceiling.py runs/worlds/s0
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from geobridge.data import load_places
    from geobridge.models.text_tower import minilm_path, split_sentences

    places = [p for p in load_places(sys.argv[1], split="test") if len(p.texts) >= 2]
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)

    def paragraph(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True)  # (N, 384)

    def sentence_mean(texts: list[str]) -> np.ndarray:
        pieces, owner = split_sentences(texts)
        emb = model.encode(pieces, normalize_embeddings=True)  # (S, 384)
        out = np.zeros((len(texts), emb.shape[1]))
        np.add.at(out, owner.numpy(), emb)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    first, second = [p.texts[0] for p in places], [p.texts[1] for p in places]
    for name, embed in (("paragraph", paragraph), ("sentence mean", sentence_mean)):
        hits = (embed(first) @ embed(second).T).argmax(axis=1) == np.arange(len(places))
        print(f"{name}: description -> description R@1 {100 * hits.mean():.1f} % over {len(places)} test places")


if __name__ == "__main__":
    main()
