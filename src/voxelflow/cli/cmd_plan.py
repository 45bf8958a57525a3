"""``voxelflow plan``: plan complete, commented configs from a dataset (nnU-Net-style self-configuration)."""

from __future__ import annotations

import argparse
import logging

from voxelflow.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan configs from a dataset: spacing, normalisation, window, network, batch size",
        description=(
            "Fingerprint a dataset (every subject read once, cached in OUT/fingerprint.json) and "
            "write OUT/plan.json plus one complete, commented YAML config per configuration "
            "(2d, 3d_fullres, 3d_lowres where it applies). Train one with "
            "`voxelflow train -c OUT/3d_fullres.yaml`."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-c", "--config", help="a config whose dataset section (and choices) to plan from"
    )
    source.add_argument(
        "--dataset",
        metavar="TABLE|FOLDER|dataset.json",
        help="a CSV table, an MSD / nnU-Net folder, or a folder of scans with *_label files",
    )
    parser.add_argument(
        "--application",
        default=None,
        help="segmentation (default), regression, classification, autoencoder, gan",
    )
    parser.add_argument(
        "--out", default="plan", metavar="DIR", help="output folder (default: plan/)"
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GB",
        help="memory budget of one training step in GB (default 8; with --device cpu: RAM, default 4)",
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="plan for a CUDA GPU with mixed precision (default) or for a CPU run",
    )
    parser.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="CHANNEL=NAME",
        help="name a channel's modality, e.g. 0=CT (overrides dataset.json channel_names)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations written into every configuration",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="fingerprint processes (default: cores)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value before planning (repeatable)",
    )
    parser.set_defaults(func=run)


def _modalities(values: list[str]) -> dict[int, str]:
    result = {}
    for text in values:
        channel, sep, name = text.partition("=")
        if not sep or not channel.strip().isdigit() or not name.strip():
            raise ConfigError(f"plan --modality: expected CHANNEL=NAME such as 0=CT, got {text!r}")
        result[int(channel)] = name.strip()
    return result


def run(args: argparse.Namespace) -> int:
    from voxelflow.planning.run import plan

    memory = (
        args.gpu_memory if args.gpu_memory is not None else (8.0 if args.device == "cuda" else 4.0)
    )
    result = plan(
        args.config,
        dataset=args.dataset,
        application=args.application,
        out=args.out,
        gpu_memory=memory,
        device=args.device,
        modalities=_modalities(args.modality),
        iterations=args.iterations,
        overrides=args.overrides,
        workers=args.workers,
    )
    summary = result.summary
    print(
        f"planned {len(result.configurations)} configuration(s) for {summary['subjects']} subject(s) "
        f"({args.device}, {memory:g} GB) in {args.out}/:"
    )
    for c in result.configurations:
        spacing = "×".join("native" if s is None else f"{s:.3g}" for s in c.spacing)
        schemes = ", ".join(f"{n['channel']}:{n['scheme']}" for n in c.normalization)
        print(
            f"  {c.name:<11} spacing {spacing} mm, window {c.window}, batch {c.batch_size}, "
            f"{len(c.strides)} levels, normalisation {schemes} -> {args.out}/{c.file_name}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    return 0
