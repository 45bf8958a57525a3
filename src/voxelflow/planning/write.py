"""Write a plan: ``plan.json`` (machine-readable) and one commented YAML config per configuration.

The YAML is written by hand (not ``yaml.dump``) so that every decision's reason sits as a
comment above its key, lists of numbers stay on one line and no YAML anchors appear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from voxelflow.engine.checkpoint import atomic_write
from voxelflow.planning.planner import Configuration, Plan

FINGERPRINT_FILE = "fingerprint.json"
PLAN_FILE = "plan.json"
#: the order sections appear in a planned config (the rest follow in their own order)
SECTION_ORDER = (
    "application", "dataset", "split", "preprocessing", "sampling", "augmentation", "network",
    "loss", "optimizer", "scheduler", "training", "inference", "evaluation", "system",
)  # fmt: skip


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _is_flat(value: Any) -> bool:
    """A list of scalars (or of lists of scalars) is written on one line."""
    if isinstance(value, list):
        return all(_is_flat(v) and not isinstance(v, dict) for v in value)
    return not isinstance(value, dict)


def _comment(lines: list[str], text: str | None, indent: str) -> None:
    if not text:
        return
    for part in text.split("\n"):
        lines.append(f"{indent}# {part}")


def _emit(
    value: Any, path: str, indent: str, comments: Mapping[str, str], lines: list[str]
) -> None:
    """Append the YAML of a mapping ``value`` (keys at ``indent``) to ``lines``."""
    keys = list(value)
    if not path:
        keys = [k for k in SECTION_ORDER if k in value] + [
            k for k in value if k not in SECTION_ORDER
        ]
    for key in keys:
        item = value[key]
        key_path = f"{path}.{key}" if path else str(key)
        _comment(lines, comments.get(key_path), indent)
        name = _scalar(key)
        if isinstance(item, dict) and item:
            lines.append(f"{indent}{name}:")
            _emit(item, key_path, indent + "  ", comments, lines)
        elif isinstance(item, list) and item and not _is_flat(item):
            lines.append(f"{indent}{name}:")
            for entry in item:
                if isinstance(entry, dict) and entry:
                    first, *rest = list(entry)
                    sub: list[str] = []
                    _emit({first: entry[first]}, key_path, indent + "  ", {}, sub)
                    sub[0] = f"{indent}- " + sub[0][len(indent) + 2 :]
                    lines.extend(sub)
                    if rest:
                        _emit({k: entry[k] for k in rest}, key_path, indent + "  ", {}, lines)
                else:
                    lines.append(f"{indent}- {_scalar(entry)}")
        else:
            lines.append(f"{indent}{name}: {_scalar(item)}")


def configuration_yaml(configuration: Configuration) -> str:
    """The commented YAML text of one configuration (validates as an ExperimentConfig)."""
    lines: list[str] = []
    _comment(lines, configuration.comments.get(""), "")
    _emit(configuration.config, "", "", configuration.comments, lines)
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan, fingerprint_file: str = FINGERPRINT_FILE) -> dict[str, Any]:
    """The machine-readable plan (``plan.json``)."""
    return {
        "fingerprint": fingerprint_file,
        "application": plan.options.application,
        "device": plan.options.device,
        "memory_gb": plan.options.memory_gb,
        "notes": plan.notes,
        "dataset": plan.summary,
        "configurations": [
            {
                "name": c.name,
                "spacing": c.spacing,
                "window": c.window,
                "batch_size": c.batch_size,
                "strides": c.strides,
                "normalization": c.normalization,
                "estimated_memory_gb": None if c.estimated_gb is None else round(c.estimated_gb, 3),
                "config": c.file_name,
            }
            for c in plan.configurations
        ],
    }


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda stream: stream.write(data))


def write_plan(plan: Plan, out_dir: str | Path) -> Path:
    """Write ``plan.json`` and every configuration's YAML into ``out_dir`` (atomically each).

    Returns:
        The path of ``plan.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for configuration in plan.configurations:
        _write_text(out / configuration.file_name, configuration_yaml(configuration))
    path = out / PLAN_FILE
    _write_text(path, json.dumps(plan_json(plan), indent=2) + "\n")
    return path
