"""``geobridge eval``: evaluate a checkpoint on a dataset and write a report with plots."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from geobridge.cli import args as arg
from geobridge.cli.data import FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from geobridge.protocols import Protocol


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model: every direction, km errors, plots, report")
    parser.add_argument("--checkpoint", required=True, type=arg.existing("folder"),
                        help="model folder or training run folder")
    parser.add_argument("--data", required=True, type=arg.existing("folder"), help="dataset root")
    parser.add_argument("--out", required=True, type=arg.output(), help="report folder")
    parser.add_argument(
        "--protocol", default=None, metavar="NAME", type=arg.names(_protocols, what="protocol", single=True),
        help="a benchmark's official protocol: university1652, sample4geo-university, cvusa, cvact, cvact-test, "
        "vigor-same, vigor-cross, sample4geo-vigor-same, sample4geo-vigor-cross or geotext1652 (roles, junk, ties, "
        "K of R@1%%; docs/protocols.md); --split, --holdout and --no-robustness do not apply to it",
    )
    parser.add_argument("--multi-query", action="store_true",
                        help="with a protocol: all query images of one group (building) form one query")
    parser.add_argument(
        "--format", default=None, choices=FORMATS,
        help="layout of --data (default geoloc, or the --protocol's layout); a benchmark layout is evaluated with its "
        "default protocol: university1652, geotext1652, cvusa, cvact (CVACT_val) or vigor-same",
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="GeoLoc split to evaluate (benchmark layouts: test only)")
    parser.add_argument("--holdout", default=None, type=arg.country_codes(),
                        help="comma-separated held-out countries, each with places in the split (default: manifest)")
    parser.add_argument("--no-robustness", action="store_true", help="skip the degraded-view conditions")
    parser.add_argument("--batch-size", type=arg.batch_size(), default=64)
    parser.add_argument("--strict", action="store_true",
                        help="refuse a split with places that lack one of the dataset's views (default: count them)")
    parser.set_defaults(func=run, out_kind="folder")


def _protocols() -> tuple[str, ...]:
    """The benchmark protocols' names (imported only when ``--protocol`` is given)."""
    from geobridge.protocols import list_protocols

    return list_protocols()


def run(args: argparse.Namespace) -> int:
    from geobridge.errors import GeoBridgeError
    from geobridge.eval.run_info import describe_run
    from geobridge.models import GeoBridge

    protocol = _chosen_protocol(args)
    if protocol is not None:
        return _run_protocol(GeoBridge.from_pretrained(args.checkpoint), protocol, args)
    if args.multi_query:
        raise GeoBridgeError("--multi-query needs --protocol or a benchmark --format")
    from geobridge.eval.pipeline import DEFAULT_CONDITIONS, evaluate_run

    model = GeoBridge.from_pretrained(args.checkpoint)
    metrics = evaluate_run(
        model,
        args.data,
        args.out,
        fmt="geoloc",
        split=args.split,
        holdout_countries=args.holdout,
        conditions=() if args.no_robustness else DEFAULT_CONDITIONS,
        batch_size=args.batch_size,
        sections={"Model": f"checkpoint `{args.checkpoint}`", "Data": f"`{args.data}`, split `{args.split}`"},
        run=describe_run(args.checkpoint),
        strict=args.strict,
        show_progress_bar=True,
    )
    primary = metrics["primary_metric"]
    print(f"{primary} = {metrics[primary]:.2f}")
    print(f"report: {args.out}/report.md")
    return 0


def _chosen_protocol(args: argparse.Namespace) -> Protocol | None:
    """``--protocol NAME``, else the default protocol of a benchmark ``--format``; ``None`` for GeoLoc."""
    from geobridge.errors import GeoBridgeError
    from geobridge.protocols import default_protocol, get_protocol

    if args.protocol is not None:
        try:
            protocol = get_protocol(args.protocol)
        except ValueError as exc:  # an unknown name: a user error, shown as one line
            raise GeoBridgeError(f"--protocol: {exc}") from None
        if args.format not in (None, protocol.layout):
            raise GeoBridgeError(f"--protocol {protocol.name} reads the {protocol.layout} layout, not --format "
                                 f"{args.format}")
    else:
        protocol = default_protocol(args.format or "geoloc")
        if protocol is None:
            return None
        if args.split != "test":
            raise GeoBridgeError(f"--split {args.split}: the {args.format} layout is evaluated on its test split "
                                 f"(protocol {protocol.name}); use --protocol for another one")
    return protocol.with_options(multi_query=args.multi_query or None)


def _run_protocol(model: Any, protocol: Protocol, args: argparse.Namespace) -> int:
    from geobridge.eval.protocol_run import run_protocol
    from geobridge.eval.run_info import describe_run

    metrics = run_protocol(
        model,
        protocol,
        args.data,
        args.out,
        batch_size=args.batch_size,
        sections={"Model": f"checkpoint `{args.checkpoint}`", "Data": f"`{args.data}`"},
        run=describe_run(args.checkpoint),
        show_progress_bar=True,
    )
    for key in sorted(k for k in metrics if k.endswith("/R@1%_K")):
        direction = key.split("/")[0]
        print(f"{direction}: R@1 = {float(metrics[f'{direction}/R@1']):.2f}, "
              f"R@1% (K = {int(float(metrics[key]))}) = {float(metrics[f'{direction}/R@1%']):.2f}")
    primary = str(metrics["primary_metric"])
    print(f"{primary} = {float(metrics[primary]):.2f}")
    print(f"report: {args.out}/report.md")
    return 0
