"""The faiss factory strings a ``GeoIndex`` accepts, parsed and bounded before faiss builds anything.

faiss allocates what a factory string asks for when it builds an empty index: ``IVF99999999`` asks for 10^8
inverted lists (several GB), ``PQ<m>x<bits>`` for ``dim * 2^bits`` centroid floats. An index file's metadata is
checked against these bounds before it is used, so a file with a valid checksum but a hostile factory string is
refused with a clear error instead of exhausting memory. faiss-free (no import cost).

Accepted grammar (what the project documents and uses)::

    [IVF<nlist>[_HNSW<M>] | HNSW<M>] [, Flat | PQ<m>[x<bits>] | SQ4 | SQ6 | SQ8 | SQfp16 | SQbf16] [, RFlat]

with a code after ``IVF`` required, and at least one part besides ``RFlat``: ``Flat``, ``HNSW32``,
``IVF1024,PQ32``, ``IVF1024,PQ32,RFlat``, ``HNSW32,SQ8``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from geobridge.errors import GeoBridgeError

MAX_DIM = 8192  # vector width
MAX_NLIST = 1 << 18  # inverted lists of an IVF index (empty lists cost ~48 bytes each)
MAX_HNSW_M = 256  # graph neighbours per node
MAX_PQ_BITS = 12  # bits per PQ sub-code: dim * 2^bits centroid floats
MAX_FACTORY_CHARS = 80

_IVF = re.compile(r"IVF(\d+)(?:_HNSW(\d+))?")
_HNSW = re.compile(r"HNSW(\d+)")
_PQ = re.compile(r"PQ(\d+)(?:x(\d+))?")
_SQ = ("SQ4", "SQ6", "SQ8", "SQfp16", "SQbf16")


@dataclass(frozen=True)
class FactorySpec:
    """What a factory string builds: ``nlist`` (0 = no IVF), ``hnsw_m`` (0 = no graph), the code, re-ranking."""

    nlist: int
    hnsw_m: int
    code: str  # "Flat", "PQ<m>x<bits>" or an SQ name
    refine: bool


def parse_factory(factory: object, dim: object) -> FactorySpec:
    """Parse and bound ``factory`` for vectors of width ``dim``; GeoBridgeError naming the bad part otherwise."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise GeoBridgeError(f"dim: expected an int in [1, {MAX_DIM}], got {dim!r}")
    if not isinstance(factory, str) or not factory or len(factory) > MAX_FACTORY_CHARS:
        raise GeoBridgeError(f"factory: expected a faiss factory string of at most {MAX_FACTORY_CHARS} characters, "
                             f"got {_show(factory)}")
    parts = factory.split(",")
    refine = parts[-1] == "RFlat"
    if refine:
        parts = parts[:-1]
    nlist = hnsw_m = 0
    if parts and (match := _IVF.fullmatch(parts[0])):
        nlist, hnsw_m = _bounded(match.group(1), 1, MAX_NLIST, "IVF nlist", factory), 0
        if match.group(2):
            _bounded(match.group(2), 2, MAX_HNSW_M, "HNSW M of the IVF quantizer", factory)
        parts = parts[1:]
        if not parts:
            raise GeoBridgeError(f"factory {factory!r}: IVF needs a code after it, e.g. IVF{nlist},Flat or ,PQ16")
    elif parts and (match := _HNSW.fullmatch(parts[0])):
        hnsw_m = _bounded(match.group(1), 2, MAX_HNSW_M, "HNSW M", factory)
        parts = parts[1:]
    if len(parts) > 1 or (not parts and not hnsw_m):
        raise GeoBridgeError(f"factory {factory!r}: {_GRAMMAR}")
    code = parts[0] if parts else "Flat"
    if match := _PQ.fullmatch(code):
        m = _bounded(match.group(1), 1, dim, "PQ sub-quantizers m", factory)
        bits = _bounded(match.group(2) or "8", 1, MAX_PQ_BITS, "PQ bits", factory)
        if dim % m:
            raise GeoBridgeError(f"factory {factory!r}: PQ{m} needs dim divisible by {m}; dim is {dim}")
        code = f"PQ{m}x{bits}"
    elif code != "Flat" and code not in _SQ:
        raise GeoBridgeError(f"factory {factory!r}: unknown part {code!r}; {_GRAMMAR}")
    return FactorySpec(nlist=nlist, hnsw_m=hnsw_m, code=code, refine=refine)


_GRAMMAR = (
    "expected [IVF<nlist>[_HNSW<M>] | HNSW<M>] [,Flat | ,PQ<m>[x<bits>] | ,SQ8 ...] [,RFlat], "
    "e.g. Flat, HNSW32, IVF1024,PQ32,RFlat"
)


def _bounded(digits: str, lo: int, hi: int, what: str, factory: str) -> int:
    value = int(digits)
    if not lo <= value <= hi:
        raise GeoBridgeError(f"factory {factory!r}: {what} must be in [{lo}, {hi}], got {value}")
    return value


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
