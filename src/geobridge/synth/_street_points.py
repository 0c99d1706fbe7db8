"""Where a place's street panoramas stand: the first on a road near the centre, more a few steps from it."""

from __future__ import annotations

import numpy as np

from geobridge.synth._canvas import _Canvas
from geobridge.synth.grid import GRID_CELLS, Landmark, Material, Scene, cell_centres

# where a panorama may stand, best first: a road, a road or pavement, open ground; each within this many metres
_STANDS: tuple[tuple[tuple[int, ...], float], ...] = (
    ((Material.ROAD,), 45.0),
    ((Material.ROAD, Material.PAVEMENT), 70.0),
    ((Material.GRASS, Material.GROUND, Material.FIELD, Material.SAND), 90.0),
)


def street_point(canvas: _Canvas, rng: np.random.Generator, landmark: Landmark | None) -> tuple[float, float]:
    """A point on a road near the centre (or on open ground when there is no road) for the panorama."""
    r = np.hypot(canvas.X, canvas.Y)
    clear = _clear_of_tall(canvas.height, canvas.ground)
    if landmark is not None:  # far enough to see the landmark whole
        clear &= np.hypot(canvas.X - landmark.x, canvas.Y - landmark.y) > landmark.radius + 12
    for materials, reach in _STANDS:
        ok = np.isin(canvas.material, materials) & clear & (r < reach)
        if ok.any():
            score = np.where(ok, r + rng.uniform(0, 6, r.shape), np.inf)
            k = int(np.argmin(score))
            i, j = divmod(k, GRID_CELLS)
            return float(canvas.xs[j]), float(canvas.ys[i])
    return 0.0, 0.0


def _clear_of_tall(height: np.ndarray, ground: np.ndarray, *, reach_cells: int = 3) -> np.ndarray:
    """(N, N) bool: cells a few metres from every tree and wall, so that a panorama there is not filled by one
    crown or facade."""
    tall = (height - ground) > 0.3
    near = tall.copy()
    for di in range(-reach_cells, reach_cells + 1):
        for dj in range(-reach_cells, reach_cells + 1):
            if di * di + dj * dj <= reach_cells * reach_cells:
                near |= np.roll(tall, (di, dj), axis=(0, 1))
    return ~near


def more_street_points(
    scene: Scene, rng: np.random.Generator, *, count: int, reach: tuple[float, float] = (8.0, 30.0)
) -> list[tuple[float, float]]:
    """Up to ``count`` more panorama points of a place (a street-level capture a few steps away): distinct cells
    between ``reach`` metres from ``scene.street_xy``, on the best kind of stand that has any there (a road, then
    pavement, then open ground), clear of trees and walls by 3 cells as the first point is, or by 1 cell where
    none is (a dense forest). Fewer where the place has fewer such cells (none on one that is all roofs or water)."""
    if count <= 0:
        return []
    xs = cell_centres()  # (N,) east of column j; north of row i is -xs[i]
    x0, y0 = scene.street_xy
    r = np.hypot(xs[None, :] - x0, -xs[:, None] - y0)  # (N, N) metres from the first point
    within = (r >= reach[0]) & (r <= reach[1])
    for clearance in (3, 1):
        ok_near = _clear_of_tall(scene.height, scene.ground, reach_cells=clearance) & within
        for materials, _ in _STANDS:
            cells = np.flatnonzero(np.isin(scene.material, materials) & ok_near)
            if cells.size:
                chosen = rng.choice(cells, size=min(count, cells.size), replace=False)
                return [(float(xs[k % GRID_CELLS]), float(-xs[k // GRID_CELLS])) for k in chosen]
    return []
