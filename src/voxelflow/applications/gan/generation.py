"""The ``sample`` and ``interpolate`` inference modes of the GAN: which noise, which conditioning.

:func:`generation_plan` yields groups of images to generate: per conditioning (class level,
input subject with a conditioning image, or one unconditioned group) either
``inference.num_samples`` seeded noise vectors (``sample``; the same vectors for every
conditioning) or ``inference.steps`` points on the line between two seeded noise vectors
(``interpolate``); with ``inference.interpolate: [a, b]`` the noise is fixed and the
conditioning moves from subject (or level) ``a`` to ``b``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.applications.base import InferenceItem
    from voxelflow.applications.gan.application import GanApplication
    from voxelflow.config.schema import InferenceConfig

log = logging.getLogger(__name__)

#: one generated group: (name, per-image table values, noise (N, Z), conditioning (N, K, *size)).
Plan = tuple[str, list[dict[str, Any]], torch.Tensor, "torch.Tensor | None"]


def generation_plan(
    app: GanApplication, items: Iterable[InferenceItem], options: InferenceConfig
) -> Iterator[Plan]:
    """Groups of images to generate for ``options.mode`` (``sample`` by default).

    Raises:
        ConfigError: ``inference.interpolate`` names unknown subjects or levels, or the GAN has
            no conditioning to interpolate.
    """
    mode = options.mode or "sample"
    seeded = torch.Generator().manual_seed(int(options.seed))
    if mode == "interpolate" and options.interpolate:
        yield _conditioning_path(
            app, items, options, torch.randn(1, app.task.noise_size, generator=seeded)
        )
        return
    if mode == "sample":
        noise = torch.randn(options.num_samples, app.task.noise_size, generator=seeded)
        alphas = None
    else:
        ends = torch.randn(2, app.task.noise_size, generator=seeded)
        alphas = torch.linspace(0.0, 1.0, options.steps)
        noise = (1 - alphas[:, None]) * ends[0] + alphas[:, None] * ends[1]
    for name, values, conditioning in _conditionings(app, items):
        rows = [{**values, "mode": mode} for _ in range(len(noise))]
        if alphas is not None:
            for row, alpha in zip(rows, alphas.tolist()):
                row["alpha"] = round(alpha, 6)
        yield f"{mode}_{name}", rows, noise, _repeat(conditioning, len(noise))


def _conditionings(
    app: GanApplication, items: Iterable[InferenceItem]
) -> Iterator[tuple[str, dict[str, Any], torch.Tensor | None]]:
    """(name, values, conditioning (1, K, *size) | None) per conditioning to generate for."""
    from voxelflow.applications.gan.task import safe_name

    if app.task.conditioning_role:
        for item in items:
            yield safe_name(item.name), {"source": item.name}, item_conditioning(app, item)
    elif app.classes is not None:
        for index, level in enumerate(app.classes):
            yield safe_name(level), {"condition": level}, app.class_maps(torch.tensor([index]))
    else:
        yield "unconditioned", {}, None


def item_conditioning(app: GanApplication, item: InferenceItem) -> torch.Tensor:
    """Conditioning of one inference subject: its conditioning image (+ its class level).

    Raises:
        DataError: the subject has no conditioning image, or no/an unknown class value.
    """
    from voxelflow.sampling.resize import resize_volume

    role = app.task.conditioning_role
    if role not in item.processed.images:
        raise DataError(
            f"subject {item.name!r}: expected a conditioning image (role {role!r}), got none"
        )
    batch: dict[str, Any] = {
        role: resize_volume(item.processed[role].data.float(), app.image_size)[None]
    }
    lookup = app.window_fields()
    if lookup is not None:
        batch["condition"] = torch.tensor([lookup.index(item.name, item.fields)])
    conditioning = app.conditioning(batch)
    assert conditioning is not None  # internal: a conditioning role was configured
    return conditioning


def _conditioning_path(
    app: GanApplication, items: Iterable[InferenceItem], options: InferenceConfig, noise: torch.Tensor
) -> Plan:
    """``inference.interpolate: [a, b]``: fixed noise, conditioning moving from a to b."""
    from voxelflow.applications.gan.task import safe_name

    wanted = [str(v) for v in options.interpolate or []]
    if len(wanted) != 2:
        raise ConfigError(f"inference.interpolate: expected two subject ids, got {wanted}")
    if app.task.conditioning_role:
        found = {item.name: item for item in items if item.name in wanted}
        missing = [name for name in wanted if name not in found]
        if missing:
            raise ConfigError(
                f"inference.interpolate: expected subjects among the inference inputs, "
                f"got unknown subject(s) {missing}"
            )
        ends = [item_conditioning(app, found[name]) for name in wanted]
    elif app.classes is not None:
        unknown = [v for v in wanted if v not in app.classes]
        if unknown:
            raise ConfigError(
                f"inference.interpolate: expected two levels of task.conditioning_column among "
                f"{app.classes}, got unknown {unknown}"
            )
        ends = [app.class_maps(torch.tensor([app.classes.index(v)])) for v in wanted]
    else:
        raise ConfigError(
            f"inference.interpolate: this gan has no conditioning to interpolate (set "
            f"task.conditioning_role or task.conditioning_column), got {wanted}; leave it null "
            "for a path between two noise vectors"
        )
    alphas = torch.linspace(0.0, 1.0, options.steps)
    shape = (-1,) + (1,) * (ends[0].ndim - 1)
    conditioning = (1 - alphas.reshape(shape)) * ends[0] + alphas.reshape(shape) * ends[1]
    rows = [{"mode": "interpolate", "from": wanted[0], "to": wanted[1], "alpha": round(a, 6)}
            for a in alphas.tolist()]  # fmt: skip
    name = f"interpolate_{safe_name(wanted[0])}_{safe_name(wanted[1])}"
    return name, rows, noise.expand(len(alphas), -1), conditioning


def _repeat(conditioning: torch.Tensor | None, count: int) -> torch.Tensor | None:
    return None if conditioning is None else conditioning.expand(count, *conditioning.shape[1:])
