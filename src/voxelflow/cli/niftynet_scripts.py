"""NiftyNet's console scripts (``net_segment`` ... ``net_download``), see :mod:`voxelflow.niftynet.commands`.

They live in the CLI layer because a NiftyNet command line ends by running voxelflow's own
command line: :func:`voxelflow.niftynet.commands.run_niftynet` is given :func:`voxelflow.cli.main.main`
instead of importing it (the NiftyNet package sits below the CLI).

Example:
    $ net_segment train -c config/default_segmentation.ini --max_iter 100
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voxelflow.cli import main as cli_main
from voxelflow.niftynet.commands import APPLICATIONS, run_niftynet


def _run(argv: Sequence[str] | None, program: str, application: str | None) -> int:
    return run_niftynet(argv, program=program, application=application, run_voxelflow=cli_main.main)


def net_segment(argv: Sequence[str] | None = None) -> int:
    """``net_segment`` console script."""
    return _run(argv, "net_segment", "segmentation")


def net_regress(argv: Sequence[str] | None = None) -> int:
    """``net_regress`` console script."""
    return _run(argv, "net_regress", "regression")


def net_classify(argv: Sequence[str] | None = None) -> int:
    """``net_classify`` console script."""
    return _run(argv, "net_classify", "classification")


def net_autoencoder(argv: Sequence[str] | None = None) -> int:
    """``net_autoencoder`` console script."""
    return _run(argv, "net_autoencoder", "autoencoder")


def net_gan(argv: Sequence[str] | None = None) -> int:
    """``net_gan`` console script."""
    return _run(argv, "net_gan", "gan")


def net_run(argv: Sequence[str] | None = None) -> int:
    """``net_run`` console script: the application comes from ``-a NAME|CLASS_PATH``."""
    return _run(argv, "net_run", None)


def net_download(argv: Sequence[str] | None = None) -> int:
    """``net_download NAME``: install a voxelflow zoo entry; NiftyNet zoo names are refused."""
    from voxelflow.niftynet.download import run_download

    return run_download(list(sys.argv[1:] if argv is None else argv))


def run_alias(argv: Sequence[str] | None = None, *, application: str = "segmentation") -> int:
    """Former entry point (kept for scripts calling it): :func:`net_run` with an application."""
    program = next((k for k, v in APPLICATIONS.items() if v == application), "net_run")
    return _run(argv, program, application)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(net_segment())
