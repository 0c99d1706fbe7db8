"""Named evaluation protocols (a registry of names and conventions, in a leaf module: configs check against it
without loading evaluation): each benchmark's test directions and the conventions of its official script.

A :class:`Protocol` fixes everything that makes two "R@1" numbers comparable: which query role is ranked against
which gallery role, what is junk (removed from the ranking), what counts as a hit, how tied scores are ordered,
what happens to a query without a positive, the K of "R@1%", and the metrics reported.
:func:`geobridge.eval.protocol_score.score_split` applies one to embeddings;
:func:`geobridge.eval.protocol_run.run_protocol` runs it end to end (``geobridge eval --protocol NAME``).

>>> get_protocol("vigor-same").k_rule
'floor-plus-one'

docs/protocols.md lists, per protocol, where each convention comes from in the peer's public code and what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from geobridge.views import check_view

Distractors = Literal["negative", "junk"]
SemiPositives = Literal["negative", "junk"]
Ties = Literal["pessimistic", "optimistic"]
NoPositive = Literal["miss", "exclude", "error"]
# the K of "R@1%" (geobridge.eval.metrics.k_for_one_percent)
KRule = Literal["round-half-up", "round-plus-one", "floor-plus-one", "floor"]
K_RULES: tuple[str, ...] = ("round-half-up", "round-plus-one", "floor-plus-one", "floor")
# "localisation": median and mean metres to the top-1 item; "km": median and mean km and the share within each
# distance threshold (the generated world's and GeoLoc's report)
METRICS: tuple[str, ...] = ("recall", "R@1%", "AP", "MRR", "hit_rate", "localisation", "km", "r_mean")


@dataclass(frozen=True)
class Protocol:
    """The evaluation conventions of one benchmark.

    ``directions``: (query view, gallery view) pairs, each scored on its own split (query role against gallery
    role, e.g. ``query_drone/`` against ``gallery_satellite/``). ``layout``: the dataset format its loader reads
    (:func:`geobridge.data.load_eval_split`, called with ``loader_options`` as keywords, e.g. VIGOR's ``mode``).
    ``distractors``: the gallery's distractors -- items of the split's ``distractor_ids`` (gallery places that no
    query shows, such as University-1652's 250 gallery-only buildings) and unlabelled items (``place_id=None``,
    such as the 160k extension) -- are negatives (kept in the ranking) or junk (removed from it). ``semi_positives``:
    for recall and AP the split's semi-positive tiles are negatives or junk; the hit rate always counts them as
    hits. ``ties``: ``"pessimistic"`` ranks a negative tied with a positive before it, ``"optimistic"`` after it
    (scripts that count strictly better items). ``no_positive``: a query without a positive is a miss (counted in
    the denominator), excluded, or an error. ``k_rule``: the K of R@1% (see
    :func:`geobridge.eval.metrics.k_for_one_percent`), from the full gallery size including junk, as the scripts
    do. ``metrics``: a subset of :data:`METRICS`. ``multi_query``: the queries of one group (all drone photos of
    a building) are merged into one query, the mean of their unit embeddings re-normalised.
    """

    name: str
    layout: str
    directions: tuple[tuple[str, str], ...]
    k_rule: KRule
    ties: Ties
    no_positive: NoPositive
    distractors: Distractors = "negative"
    semi_positives: SemiPositives = "negative"
    metrics: tuple[str, ...] = ("recall", "R@1%")
    recall_ks: tuple[int, ...] = (1, 5, 10)
    multi_query: bool = False
    loader_options: tuple[tuple[str, str], ...] = ()
    source: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError(f"protocol {self.name!r}: no directions")
        for query, gallery in self.directions:
            check_view(query)
            check_view(gallery)
        if self.k_rule not in K_RULES:
            raise ValueError(f"protocol {self.name!r}: unknown k_rule {self.k_rule!r}; expected one of {K_RULES}")
        for field_name, allowed in (
            ("ties", ("pessimistic", "optimistic")),
            ("no_positive", ("miss", "exclude", "error")),
            ("distractors", ("negative", "junk")),
            ("semi_positives", ("negative", "junk")),
        ):
            if getattr(self, field_name) not in allowed:
                raise ValueError(
                    f"protocol {self.name!r}: {field_name}={getattr(self, field_name)!r}; expected one of {allowed}"
                )
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown metrics {sorted(unknown)}; expected some of {METRICS}")
        if not self.recall_ks or min(self.recall_ks) < 1:
            raise ValueError(f"protocol {self.name!r}: recall_ks must be positive, got {self.recall_ks}")

    def with_options(self, *, multi_query: bool | None = None) -> Protocol:
        """A copy with the given options changed (``None`` keeps the current value)."""
        return dataclasses.replace(self, multi_query=self.multi_query if multi_query is None else multi_query)


_U1652_DIRECTIONS = (("drone", "satellite"), ("satellite", "drone"))
_STREET = (("street", "satellite"),)

_UNIVERSITY1652 = Protocol(
    name="university1652",
    layout="university1652",
    directions=_U1652_DIRECTIONS,
    k_rule="round-plus-one",
    ties="pessimistic",
    no_positive="miss",
    distractors="negative",
    metrics=("recall", "R@1%", "AP"),
    source="layumi/University1652-Baseline evaluate_gpu.py: evaluate(), compute_mAP()",
    description="query_<view> against gallery_<view>; the 250 distractor buildings of the gallery are negatives",
)
_CVUSA = Protocol(
    name="cvusa",
    layout="cvusa",
    directions=_STREET,
    k_rule="floor",
    ties="optimistic",
    no_positive="error",
    source="Skyy93/Sample4Geo sample4geo/evaluate/cvusa_and_cvact.py: calculate_scores(); "
    "YujiaoShi/cross_view_localization_SAFA script/test_cvusa.py: validate()",
    description="street panorama -> its one aerial tile, ranked by the tiles that score strictly higher",
)
_CVACT = dataclasses.replace(
    _CVUSA,
    name="cvact",
    layout="cvact",
    source="Skyy93/Sample4Geo sample4geo/evaluate/cvusa_and_cvact.py: calculate_scores()",
    loader_options=(("split", "val"),),
    description="as cvusa, on CVACT_val (valSet of ACT_data.mat, 8,884 pairs: the split most tables report)",
)
_VIGOR_SAME = Protocol(
    name="vigor-same",
    layout="vigor",
    directions=_STREET,
    k_rule="floor-plus-one",
    ties="optimistic",
    no_positive="error",
    semi_positives="negative",
    metrics=("recall", "R@1%", "hit_rate", "localisation"),
    loader_options=(("mode", "same"),),
    source="Jeff-Zilence/VIGOR train_SAFA.py: validate_top(); evaluate_from_npy.py: generate_distances() with "
    "zero offset (top-1 tile centre)",
    description="VIGOR same-area test split; semi-positive tiles: negatives for recall, hits for the hit rate",
)
_SAMPLE4GEO_VIGOR_SAME = dataclasses.replace(
    _VIGOR_SAME,
    name="sample4geo-vigor-same",
    k_rule="floor",
    metrics=("recall", "R@1%", "hit_rate"),
    source="Skyy93/Sample4Geo sample4geo/evaluate/vigor.py: calculate_scores()",
    description="vigor-same with Sample4Geo's K of R@1% (M // 100 instead of M // 100 + 1)",
)

# variants are written as changes to the protocol they vary (dataclasses.replace checks them again)
PROTOCOLS: tuple[Protocol, ...] = (
    _UNIVERSITY1652,
    dataclasses.replace(
        _UNIVERSITY1652,
        name="sample4geo-university",
        distractors="junk",
        source="Skyy93/Sample4Geo sample4geo/evaluate/university.py: evaluate(), eval_query(), compute_mAP(); "
        "sample4geo/dataset/university.py: U1652DatasetEval (label -1 for gallery ids absent from the queries)",
        description="as university1652, but gallery buildings that no query shows are junk (dropped from the ranking)",
    ),
    _CVUSA,
    _CVACT,
    dataclasses.replace(
        _CVACT,
        name="cvact-test",
        loader_options=(("split", "test"),),
        description="as cvact, on CVACT_test (valSetAll of ACT_data.mat, 92,802 pairs, images in ANU_data_test)",
    ),
    _VIGOR_SAME,
    dataclasses.replace(
        _VIGOR_SAME,
        name="vigor-cross",
        loader_options=(("mode", "cross"),),
        source="Jeff-Zilence/VIGOR train_SAFA.py: validate_top(); evaluate_from_npy.py: generate_distances()",
        description="VIGOR cross-area test split (the two test cities), otherwise as vigor-same",
    ),
    _SAMPLE4GEO_VIGOR_SAME,
    dataclasses.replace(
        _SAMPLE4GEO_VIGOR_SAME,
        name="sample4geo-vigor-cross",
        loader_options=(("mode", "cross"),),
        description="vigor-cross with Sample4Geo's K of R@1%",
    ),
    Protocol(
        name="geotext1652",
        layout="geotext1652",
        directions=(("text", "drone"), ("drone", "text")),
        k_rule="round-plus-one",
        ties="pessimistic",
        no_positive="error",
        metrics=("recall", "r_mean"),
        source="MultimodalGeo/GeoText-1652 Method/re_bbox.py: itm_eval() (matches by building via img2building)",
        description="text -> drone image and drone image -> text; a hit is any item of the same building (the "
        "item's place_id), not only the image a caption was written for (EvalItem.target is not used)",
    ),
)


# the protocol that `geobridge eval --format X`, evaluate_model and the trainer's final evaluation use per layout
DEFAULT_PROTOCOLS: dict[str, str] = {
    "university1652": "university1652",
    "geotext1652": "geotext1652",
    "cvusa": "cvusa",
    "cvact": "cvact",
    "vigor": "vigor-same",
}


def default_protocol(fmt: str) -> Protocol | None:
    """The default protocol of a benchmark layout; ``None`` for the GeoLoc layout (every direction, no roles).

    >>> default_protocol("vigor").name
    'vigor-same'
    """
    if fmt == "geoloc":
        return None
    if fmt not in DEFAULT_PROTOCOLS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of geoloc, {', '.join(DEFAULT_PROTOCOLS)}")
    return get_protocol(DEFAULT_PROTOCOLS[fmt])


def list_protocols() -> tuple[str, ...]:
    """The names of the registered protocols, in registry order."""
    return tuple(p.name for p in PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ``ValueError`` lists the valid names otherwise."""
    for protocol in PROTOCOLS:
        if protocol.name == name:
            return protocol
    raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(list_protocols())}")
