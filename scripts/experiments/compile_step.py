"""The CPU recipe's image-tower step in eager mode against ``torch.compile``, and what compiling costs.

    python scripts/experiments/compile_step.py [--steps 30]

One step as the recipe trains the image tower: ``gb-small`` in channels-last format, a batch of 32 of each image
view at the recipe's input sizes (random pixels: the cost does not depend on them), forward, a loss, backward and
an AdamW step. Prints milliseconds per step for both, the speedup and the seconds the first compiled steps take.
Run it with nothing beside it.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from geobridge.train.config import load_config
    from geobridge.train.setup import build_model

    torch.manual_seed(0)
    model = build_model(load_config(args.config, []))
    tower = model.image.to(memory_format=torch.channels_last)
    images = {
        view: torch.randn(args.batch_size, 3, *size).contiguous(memory_format=torch.channels_last)
        for view, size in model.config.image.input_size.items()
    }  # (B, 3, H, W) per view
    optimizer = torch.optim.AdamW([p for p in tower.parameters() if p.requires_grad], lr=1e-4)

    def step(forward) -> None:
        loss = sum(forward(x, view=view).pow(2).mean() for view, x in images.items())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def seconds_per_step(forward) -> float:
        for _ in range(3):
            step(forward)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(forward)
        return (time.perf_counter() - start) / args.steps

    eager = seconds_per_step(tower)
    start = time.perf_counter()
    compiled = torch.compile(tower)
    for _ in range(3):  # every view's graph compiled
        step(compiled)
    compile_s = time.perf_counter() - start
    fast = seconds_per_step(compiled)
    print(f"eager {eager * 1000:.1f} ms/step, compiled {fast * 1000:.1f} ms/step, "
          f"speedup {eager / fast:.2f}x, first compiled steps {compile_s:.0f} s")


if __name__ == "__main__":
    main()
