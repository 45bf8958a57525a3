"""``net_download NAME``: NiftyNet's model-zoo command, on voxelflow's zoo.

NiftyNet's zoo entries (``highres3dnet_brain_parcellation``, ``dense_vnet_abdominal_ct`` ...,
with or without ``_model_zoo``) hold TensorFlow checkpoints and TensorFlow network code that
voxelflow cannot load, so they are refused with that reason and nothing is downloaded. Any
other NAME is installed as ``voxelflow zoo install NAME`` would (an entry folder, a
``.zip``/``.tar.gz`` archive or a name of the local index ``<zoo home>/index.json``).

Example:
    $ net_download dense_vnet_abdominal_ct_model_zoo
    net_download: configuration error: dense_vnet_abdominal_ct: a NiftyNet model-zoo entry ...
    $ net_download brain_model.zip
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["NIFTYNET_ZOO", "run_download"]

#: NiftyNet's model-zoo entries (NifTK/NiftyNetModelZoo) → what they held
NIFTYNET_ZOO = {
    "highres3dnet_brain_parcellation": "HighRes3DNet brain parcellation (T1 MRI)",
    "dense_vnet_abdominal_ct": "DenseVNet abdominal CT multi-organ segmentation",
    "anisotropic_nets_brats_challenge": "anisotropic networks for BraTS brain tumours",
    "ultrasound_simulator_gan": "ultrasound simulator GAN",
    "mr_ct_regression": "MR to CT regression",
    "autocontext_mr_ct": "auto-context MR to CT regression",
    "unet_histology": "U-Net histology segmentation",
    "cell_count": "cell counting",
    "hybrid_mr_ct": "hybrid MR/CT regression",
    "decathlon_hippocampus": "Decathlon hippocampus segmentation",
    "testing": "NiftyNet's test data",
}
USAGE = "usage: net_download NAME [--force] [--home ZOO_HOME]"


def run_download(argv: Sequence[str]) -> int:
    """Refuse a NiftyNet zoo name, else install a voxelflow zoo entry; returns the exit code."""
    from voxelflow.errors import ConfigError, VoxelflowError

    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + "\n\n" + (__doc__ or "") + "\n")
        return 0 if args else 2
    force = "--force" in args
    home = None
    if "--home" in args:
        index = args.index("--home")
        if index + 1 >= len(args):
            sys.stderr.write("net_download: configuration error: --home: expected a folder\n")
            return 2
        home = args[index + 1]
        del args[index : index + 2]
    names = [a for a in args if a != "--force"]
    if len(names) != 1 or names[0].startswith("-"):
        sys.stderr.write(f"net_download: configuration error: expected one NAME\n{USAGE}\n")
        return 2
    try:
        refuse_niftynet_entry(names[0])
        from voxelflow.zoo.store import install

        model = install(names[0], home=home, force=force)
        print(f"installed {model.card.name} {model.card.version} in {model.path}")
        return 0
    except ConfigError as exc:
        sys.stderr.write(f"net_download: configuration error: {' '.join(str(exc).split())}\n")
        return 2
    except VoxelflowError as exc:
        sys.stderr.write(f"net_download: error: {' '.join(str(exc).split())}\n")
        return 1


def refuse_niftynet_entry(name: str) -> None:
    """Raise ConfigError for a NiftyNet model-zoo name (``NAME`` or ``NAME_model_zoo``).

    Example:
        >>> refuse_niftynet_entry("my_model.zip")  # not a NiftyNet name: nothing raised
    """
    from voxelflow.errors import ConfigError

    base = name.strip().removesuffix("_model_zoo")
    for suffix in ("_code", "_weights", "_data", "_all", "_config", "_initial_maps"):
        base = base.removesuffix(suffix)
    if base in NIFTYNET_ZOO:
        raise ConfigError(
            f"{name}: a NiftyNet model-zoo entry ({NIFTYNET_ZOO[base]}): its weights are "
            "TensorFlow checkpoints and its network code TensorFlow, which voxelflow cannot "
            "load; nothing was downloaded. Train it with the net_* commands on your data, or "
            "install a voxelflow zoo entry (`voxelflow zoo list`)"
        )
