"""Two-view experiment: street panorama against the satellite tile, plain or polar-transformed (docs/model.md).

    python scripts/experiments/polar_street.py --data runs/world --mode polar_roll --steps 500

Modes: ``plain`` (north-up tile), ``polar`` (the tile resampled into polar coordinates about its centre:
azimuth along the columns from north clockwise, as the panorama; distance from the centre down the rows) and
``polar_roll`` (polar, with one random heading per sample applied to both the panorama and the polar tile).
Trains one half-width ResNet-18 (shared) with two linear heads by symmetric InfoNCE, then prints street->satellite
R@1 / R@10 on the test places and R@1 on 200 training places, as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import timm
import torch
import torch.nn.functional as F
from torch import nn

from geobridge.data import load_places
from geobridge.data.tensor_cache import build_view_cache


def polar_grid(height: int, width: int) -> torch.Tensor:
    """(1, H, W, 2) sampling grid: column j looks at azimuth 2 pi (j + 0.5) / W, row i at radius 1 - (i + 0.5) / H."""
    azimuth = 2 * math.pi * (torch.arange(width) + 0.5) / width
    radius = 1 - (torch.arange(height) + 0.5) / height
    gx = radius[:, None] * torch.sin(azimuth)[None, :]  # east
    gy = -radius[:, None] * torch.cos(azimuth)[None, :]  # north is up (negative y in grid_sample)
    return torch.stack([gx, gy], -1)[None]


def roll(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) shifted circularly along W by ``shift[b]`` columns."""
    cols = (torch.arange(x.shape[-1])[None, :] + shift[:, None]) % x.shape[-1]  # (B, W)
    return torch.gather(x, 3, cols[:, None, None, :].expand(-1, x.shape[1], x.shape[2], -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--mode", choices=("plain", "polar", "polar_roll"), default="polar_roll")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    def caches(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        places = load_places(args.data, split=split)
        street = build_view_cache(places, "street", size=(64, 128), interpolation="bilinear").images
        tiles = build_view_cache(places, "satellite", size=(64, 64), interpolation="bilinear").images
        return street, tiles

    train_street, train_tiles = caches("train")
    test_street, test_tiles = caches("test")
    grid = polar_grid(64, 128)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - 0.45) / 0.25

    def tile_input(tiles: torch.Tensor) -> torch.Tensor:
        if args.mode == "plain":
            return tiles
        return F.grid_sample(tiles, grid.expand(tiles.shape[0], -1, -1, -1), align_corners=False)  # (B, 3, 64, 128)

    backbone = timm.create_model("resnet18", num_classes=0, channels=[32, 64, 128, 256])
    head_street, head_tile = nn.Linear(256, 128), nn.Linear(256, 128)
    logit_scale = nn.Parameter(torch.tensor(2.66))
    params = [*backbone.parameters(), *head_street.parameters(), *head_tile.parameters(), logit_scale]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)

    def embed(x: torch.Tensor, head: nn.Module) -> torch.Tensor:
        return F.normalize(head(backbone(x)), dim=-1)

    start = time.time()
    batch = 32
    for step in range(args.steps):
        idx = torch.randperm(train_street.shape[0])[:batch]
        street, tiles = prep(train_street[idx]), tile_input(prep(train_tiles[idx]))
        if args.mode == "polar_roll":  # the same heading for both views keeps them aligned
            shift = torch.randint(0, 128, (batch,))
            street, tiles = roll(street, shift), roll(tiles, shift)
        logits = logit_scale.exp() * embed(street, head_street) @ embed(tiles, head_tile).T  # (B, B)
        target = torch.arange(batch)
        loss = (F.cross_entropy(logits, target, label_smoothing=0.1)
                + F.cross_entropy(logits.T, target, label_smoothing=0.1)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
    backbone.eval()
    with torch.no_grad():
        sims = embed(prep(test_street), head_street) @ embed(tile_input(prep(test_tiles)), head_tile).T
        truth = torch.arange(sims.shape[0])
        r1 = (sims.argmax(1) == truth).float().mean().item() * 100
        r10 = (sims.topk(10, dim=1).indices == truth[:, None]).any(1).float().mean().item() * 100
        train_sims = embed(prep(train_street[:200]), head_street) @ embed(tile_input(prep(train_tiles[:200])),
                                                                           head_tile).T
        train_r1 = (train_sims.argmax(1) == torch.arange(200)).float().mean().item() * 100
    print(json.dumps({"mode": args.mode, "steps": args.steps, "street->satellite/R@1": round(r1, 1),
                      "street->satellite/R@10": round(r10, 1), "train/R@1": round(train_r1, 1),
                      "seconds": round(time.time() - start)}))


if __name__ == "__main__":
    main()
