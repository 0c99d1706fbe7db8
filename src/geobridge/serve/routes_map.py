"""The map page's routes: the page itself, thumbnails of matched reference images, quicklooks of reference rasters
and the offline world outline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from geobridge.serve.state import ServiceState, make_thumbnail, service_of
from geobridge.serve.uploads import ApiError

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter()


@router.get("/thumb/{thumb_id}", summary="A thumbnail of a reference image that the index recorded")
async def thumbnail(request: Request, thumb_id: str) -> Response:
    service = service_of(request)
    path = service.thumbs.lookup(thumb_id)
    if path is None:
        raise ApiError(404, "not_found", f"no reference image with id {thumb_id!r}")
    cached = service.thumbs.cached(thumb_id)
    if cached is None:
        cached = await anyio.to_thread.run_sync(make_thumbnail, path, limiter=service.limiter())
        if cached is None:
            raise ApiError(404, "not_found", f"reference image {thumb_id!r} is missing or unreadable")
        service.thumbs.store(thumb_id, cached)
    return Response(cached, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


def _overlay_list(service: ServiceState) -> list[dict[str, Any]]:
    overlays = service.overlays
    if "list" not in overlays:
        from geobridge.serve.overlay import raster_sources, wgs84_bounds

        sources = raster_sources((r for _, r in service.index.records()), root=service.root)
        overlays["paths"] = sources
        overlays["list"] = [{"id": k, "url": f"/overlay/{k}.png", "name": path.name, "bounds": wgs84_bounds(path)}
                            for k, path in enumerate(sources) if path.is_file()]
    return overlays["list"]


@router.get("/overlays.json", summary="Quicklooks of the reference rasters: PNG URL and WGS84 bounds of each")
async def overlay_index(request: Request) -> dict[str, Any]:
    service = service_of(request)
    try:
        listed = await anyio.to_thread.run_sync(_overlay_list, service, limiter=service.limiter())
    except ImportError:  # no rasterio: an index of raster tiles cannot have been built here; show none
        listed = []
    return {"overlays": listed}


@router.get("/overlay/{overlay_id}.png", summary="A reference raster's quicklook, warped to WGS84 (lon/lat grid)")
async def overlay_png(request: Request, overlay_id: int) -> Response:
    from geobridge.serve.overlay import quicklook

    service = service_of(request)
    listed = await anyio.to_thread.run_sync(_overlay_list, service, limiter=service.limiter())
    if not any(o["id"] == overlay_id for o in listed):
        raise ApiError(404, "not_found", f"no raster overlay with id {overlay_id}")
    overlays = service.overlays
    if overlay_id not in overlays:
        png, _ = await anyio.to_thread.run_sync(quicklook, overlays["paths"][overlay_id], limiter=service.limiter())
        overlays[overlay_id] = png
    return Response(overlays[overlay_id], media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/world.geojson", summary="Offline world outline (GSHHG crude coastlines) for the map")
async def world(request: Request) -> Response:
    return Response(service_of(request).world_bytes, media_type="application/geo+json",
                    headers={"Cache-Control": "max-age=86400"})


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
