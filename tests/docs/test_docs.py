"""The documentation: generated reference complete, examples valid, strict MkDocs build."""

from __future__ import annotations

import html
import importlib
import importlib.util
import re
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from voxelflow.config.load import load_experiment
from voxelflow.config.schema import Component, Experiment

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def load_hook(name: str) -> ModuleType:
    """Import a hook file of docs/hooks/ as a module."""
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config_hook() -> ModuleType:
    return load_hook("config_reference")


@pytest.fixture(scope="module")
def niftynet_hook() -> ModuleType:
    return load_hook("niftynet_reference")


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell (without backticks) → the other cells, for every table row of ``markdown``."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line)]
            cells = [c for c in cells if c != ""]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def schema_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, bool]]:
    """(dotted key, FieldInfo, is a section) of every field, walked independently of the hook."""
    found = []
    for name, field in model.model_fields.items():
        key = prefix + name
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation))]
        sections = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        sections = [a for a in sections if a is not Component]
        dict_values = [typing.get_args(a)[1] for a in inner if typing.get_origin(a) is dict]
        dict_sections = [a for a in dict_values if isinstance(a, type) and issubclass(a, BaseModel)]
        found.append((key, field, bool(sections)))
        for section in sections:
            found.extend(schema_fields(section, key + "."))
        for section in dict_sections:
            found.extend(schema_fields(section, key + ".<name>."))
    return found


# ----------------------------------------------------------------------------- config reference


def test_every_experiment_field_documented(config_hook: ModuleType) -> None:
    markdown = config_hook.config_reference_markdown()
    rows = table_rows(markdown)
    fields = schema_fields(Experiment)
    assert len(fields) > 80
    for key, field, is_section in fields:
        assert key in rows, f"{key} missing from the configuration reference"
        type_cell, default_cell, meaning = rows[key]
        assert type_cell.strip("`"), key
        assert field.description, key
        assert field.description in html.unescape(meaning.replace("\\|", "|")), key
        if is_section and "." not in key:
            assert default_cell == f"[below](#{key})"
            assert f"\n### {key}\n" in markdown
            continue
        if field.is_required():
            assert default_cell == "`required`", key
            continue
        expected = field.get_default(call_default_factory=True)
        if isinstance(expected, BaseModel):
            expected = expected.model_dump(mode="json")
        elif isinstance(expected, list):
            expected = [
                e.model_dump(mode="json") if isinstance(e, BaseModel) else e for e in expected
            ]
        elif isinstance(expected, Path):
            expected = str(expected)
        assert yaml.safe_load(default_cell.strip("`")) == expected, key


def test_constraints_and_types_are_shown(config_hook: ModuleType) -> None:
    rows = table_rows(config_hook.config_reference_markdown())
    assert rows["split.validation"][0] == "`float`"
    assert "≥ 0.0, &lt; 1.0" in rows["split.validation"][2]  # HTML-escaped in the cell
    assert rows["training.amp"][0] == '`"auto" | "off" | "fp16" | "bf16"`'
    assert rows["preprocessing.spacing"][0] == "`list[float | null] | null`"
    assert rows["optimizer"][1] == "`{name: adamw, lr: 0.001}`"


# ----------------------------------------------------------------------------- registries


@pytest.mark.parametrize(
    ("kind", "module", "attribute"),
    [
        ("networks", "voxelflow.networks", "NETWORKS"),
        ("losses", "voxelflow.losses", "LOSSES"),
        ("optimizers", "voxelflow.optim", "OPTIMIZERS"),
        ("schedulers", "voxelflow.optim", "SCHEDULERS"),
        ("normalizers", "voxelflow.transforms.normalize", "NORMALIZERS"),
        ("readers", "voxelflow.io.readers", "READERS"),
    ],
)
def test_registry_tables_list_every_component(
    config_hook: ModuleType, kind: str, module: str, attribute: str
) -> None:
    registry = getattr(importlib.import_module(module), attribute)
    rows = table_rows(config_hook.registry_markdown(kind))
    assert set(rows) == set(registry.names())
    for entry in registry.entries():
        assert entry.description in html.unescape(rows[entry.name][0].replace("\\|", "|"))


def test_registry_options_skip_builder_arguments(config_hook: ModuleType) -> None:
    rows = table_rows(config_hook.registry_markdown("networks"))
    assert "in_channels" not in rows["unet"][1]
    assert "channels: [32, 64" in rows["unet"][1]
    optimizers = table_rows(config_hook.registry_markdown("optimizers"))
    assert "params" not in optimizers["sgd"][1] and "lr: 0.01" in optimizers["sgd"][1]
    with pytest.raises(KeyError, match="expected a registry kind"):
        config_hook.registry_markdown("nets")


def test_benchmark_table_lists_every_script(config_hook: ModuleType) -> None:
    rows = table_rows(config_hook.benchmarks_markdown())
    assert set(rows) == {p.name for p in (ROOT / "benchmarks").glob("*.py")}


def test_cli_reference_has_every_available_command() -> None:
    from voxelflow.cli.main import COMMANDS

    markdown = load_hook("cli_reference").cli_reference_markdown()
    available = [name for name, module in COMMANDS.items() if importlib.util.find_spec(module)]
    assert available
    for name in available:
        assert f"\n### voxelflow {name}\n\n```text\nusage: voxelflow {name}" in markdown
    assert "### voxelflow config validate" in markdown  # actions of a command too


# ----------------------------------------------------------------------------- NiftyNet


def test_niftynet_key_table_covers_every_key(niftynet_hook: ModuleType) -> None:
    from voxelflow.niftynet.conversion import SYSTEM_SECTIONS

    markdown = niftynet_hook.niftynet_keys_markdown()
    statuses = {"mapped", "approximated", "not supported", "ignored", "depends on the value"}
    for section, table in SYSTEM_SECTIONS.items():
        part = markdown.split(f"### [{section}]\n", 1)[1].split("\n### ", 1)[0]
        rows = table_rows(part)
        assert set(rows) == set(table), section
        assert all(cells[1] in statuses for cells in rows.values()), section
    rows = table_rows(markdown.split("### [NETWORK]\n", 1)[1])
    assert "network.name = highresnet" in rows["name"][2]  # NiftyNet's highres3dnet
    rows = table_rows(markdown.split("### [TRAINING]\n", 1)[1])
    assert "optimizer.lr = 0.01" in rows["lr"][2]


def test_niftynet_names_and_defaults(niftynet_hook: ModuleType) -> None:
    names = table_rows(niftynet_hook.niftynet_names_markdown())
    assert names["gdsc"][0] == "`{name: generalized_dice, weight_type: square}`"
    defaults = table_rows(niftynet_hook.niftynet_defaults_markdown())
    assert defaults["training.max_iterations"] == ["`10000`"]


def test_unknown_marker_fails_the_build(niftynet_hook: ModuleType, config_hook: ModuleType) -> None:
    page = "text <!-- voxelflow:config-refrence --> text"
    assert config_hook.expand_markers(page) == page  # left for the next hook ...
    with pytest.raises(ValueError, match="config-refrence"):
        niftynet_hook.expand_markers(page, page="x.md")  # ... which refuses it


# ----------------------------------------------------------------------------- page examples


def yaml_examples() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(DOCS)}#{index}", block)
        for page in sorted(DOCS.rglob("*.md"))
        for index, block in enumerate(YAML_BLOCK.findall(page.read_text(encoding="utf-8")))
    ]


@pytest.mark.parametrize(("where", "block"), yaml_examples())
def test_yaml_examples_are_valid_experiments(where: str, block: str) -> None:
    from voxelflow.config.build import check_component
    from voxelflow.losses import LOSSES
    from voxelflow.networks import NETWORKS
    from voxelflow.optim import OPTIMIZERS, SCHEDULERS
    from voxelflow.transforms.normalize import NORMALIZERS

    experiment = load_experiment(yaml.safe_load(block))
    checks = [
        (NETWORKS, experiment.network, "network", ("spatial_dims", "in_channels", "out_channels")),
        (LOSSES, experiment.loss, "loss", ()),
        (OPTIMIZERS, experiment.optimizer, "optimizer", ("params",)),
    ] + [
        (NORMALIZERS, step, f"preprocessing.normalization.{i}", ())
        for i, step in enumerate(experiment.preprocessing.normalization)
    ]
    for registry, component, key, fixed in checks:
        if ":" not in component.name:  # plugin examples are run in test_extending_examples
            check_component(registry, component, key=key, fixed=fixed)
    assert experiment.scheduler.name in SCHEDULERS


def test_getting_started_folder_patterns_find_the_subjects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxelflow.io.table import load_table

    block = YAML_BLOCK.findall((DOCS / "getting-started.md").read_text(encoding="utf-8"))[0]
    experiment = load_experiment(yaml.safe_load(block))
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for folder, suffix in (("images", "_t1"), ("labels", "_seg")):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for case in ("case01", "case02"):
            image = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), affine)
            nib.save(image, tmp_path / "data" / folder / f"{case}{suffix}.nii.gz")
    monkeypatch.chdir(tmp_path)
    rows = load_table(experiment.dataset)
    assert [row.name for row in rows] == ["case01", "case02"]
    assert rows[0].path("label").name == "case01_seg.nii.gz"


def test_data_page_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "data.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    affine = np.array([[0, -0.8, 0, 10], [0.9, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    image = nib.Nifti1Image(rng.random((6, 5, 4)).astype(np.float32), affine)
    nib.save(image, tmp_path / "case01_t1.nii.gz")
    label = nib.Nifti1Image((rng.random((6, 5, 4)) > 0.5).astype(np.uint8), affine)
    nib.save(label, tmp_path / "case01_seg.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    assert namespace["image"].orientation == "ALS"  # nibabel's axis codes of this affine
    copy = nib.load(tmp_path / "copy.nii.gz")
    np.testing.assert_allclose(copy.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(label.dataobj))


# ----------------------------------------------------------------------------- the site


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "training.max_iterations" in html and "voxelflow:config-reference" not in html
    assert not list((tmp_path / "site").rglob("hooks"))  # hook sources are not published
