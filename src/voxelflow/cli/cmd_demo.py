"""``voxelflow demo [--app APP] [--out DIR] [--quick]``: a whole application on real MRI in minutes."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import re
from pathlib import Path

from voxelflow.errors import VoxelflowError

log = logging.getLogger(__name__)

#: application → module whose ``run_demo(out, *, quick)`` runs its demo.
DEMOS = {
    "segmentation": "voxelflow.demo.run",
    "regression": "voxelflow.demo.regression",
    "super_resolution": "voxelflow.demo.super_resolution",
    "classification": "voxelflow.demo.classification",
    "autoencoder": "voxelflow.demo.autoencoder",
    "gan": "voxelflow.demo.gan",
}
#: the demo run without ``--app``; its output folder carries no demo suffix
DEFAULT_DEMO = "segmentation"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train, infer and evaluate an application on subjects generated from real MRI",
        description="Builds subjects from the MNI152 template shipped by nilearn (phantoms without it), "
        "trains, infers on held-out subjects and evaluates against a stated baseline. "
        "Default: tissue segmentation with a U-Net.",
    )
    parser.add_argument(
        "--app",
        choices=sorted(DEMOS),
        default=DEFAULT_DEMO,
        help="which application's demo (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for data, config and run (default: ./voxelflow-demo or "
        "./voxelflow-demo-APP; ~/voxelflow-demo[-APP] when the current folder is "
        "inside a voxelflow source checkout)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny version that finishes in well under a minute"
    )
    parser.add_argument(
        "--release",
        action="store_true",
        help="segmentation demo: the long run that trains the model shipped as "
        "zoo/voxelflow-demo-tissue (2 mm, 40 subjects, 4000 iterations: about 30 minutes on an "
        "idle 2-core CPU); folders data-release, plan-release, run-release",
    )
    parser.add_argument(
        "--real-subjects",
        type=Path,
        default=None,
        metavar="DIR",
        help="segmentation demo: real T1 heads with reference segmentations to check the trained "
        "model on, the cache `benchmarks/demo_generalisation.py --fetch` fills (default: that "
        "cache, $VOXELFLOW_BENCH_CACHE or ~/.cache/voxelflow-bench, when it exists; not with "
        "--quick); the table and pictures go into the evaluation report and the model card",
    )
    parser.set_defaults(func=run)


def voxelflow_checkout(folder: Path) -> Path | None:
    """The voxelflow source checkout (a git work tree) that holds ``folder``, or None.

    A checkout is a folder with ``.git`` and a ``pyproject.toml`` naming the project voxelflow.
    """
    for candidate in (folder, *folder.parents):
        project = candidate / "pyproject.toml"
        if (candidate / ".git").exists() and project.is_file():
            text = project.read_text(encoding="utf-8", errors="replace")
            if re.search(r'^name\s*=\s*"voxelflow"', text, flags=re.MULTILINE):
                return candidate
    return None


def default_out(app: str, *, cwd: Path | None = None, home: Path | None = None) -> Path:
    """Where a demo writes when ``--out`` is not given.

    The current folder, unless that lies inside a voxelflow checkout: hundreds of megabytes of
    generated data and runs do not belong in the source tree (git status, editors, test
    discovery all see them), so the demo then writes under the home folder and says so.
    """
    name = "voxelflow-demo" if app == DEFAULT_DEMO else f"voxelflow-demo-{app}"
    cwd = (cwd or Path.cwd()).resolve()
    checkout = voxelflow_checkout(cwd)
    if checkout is None:
        return cwd / name
    home = home or Path.home()
    if not home.is_dir() or voxelflow_checkout(home.resolve()) is not None:
        raise VoxelflowError(
            f"the current folder {str(cwd)!r} is inside the voxelflow checkout {str(checkout)!r} "
            "and the home folder cannot take the demo's output: choose a folder with --out DIR"
        )
    out = home / name
    log.info(
        "writing the demo to %s (not inside the voxelflow checkout %s; choose with --out DIR)",
        out, checkout,
    )  # fmt: skip
    return out


def run(args: argparse.Namespace) -> int:
    """Run the chosen application's demo into ``--out`` (or :func:`default_out`)."""
    from voxelflow.engine.threads import apply_threads

    module = importlib.import_module(DEMOS[args.app])
    out = Path(args.out) if args.out else default_out(args.app)
    # data generation before training: threads as training will choose them (1 data worker);
    # training and inference set their own again
    apply_threads(None, workers=1, what="demo")
    extra: dict[str, Path | bool] = {}
    if args.real_subjects is not None:
        if "real_subjects" not in inspect.signature(module.run_demo).parameters:
            raise VoxelflowError(
                f"--real-subjects: the {args.app} demo has no check on real subjects "
                "(only --app segmentation)"
            )
        extra["real_subjects"] = args.real_subjects
    if args.release:
        if "release" not in inspect.signature(module.run_demo).parameters:
            raise VoxelflowError(
                f"--release: the {args.app} demo ships no model (only --app segmentation)"
            )
        extra["release"] = True
    module.run_demo(out, quick=args.quick, **extra)
    return 0
