"""The committed reference pages (docs/reference/) match the code and the CLI's ``--options``."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml

from voxelflow.cli.main import main
from voxelflow.config.options import (
    REGISTRY_KINDS,
    component_options,
    docstring_arguments,
    github_table_cells,
    load_registry,
    options_text,
    signature_options,
)
from voxelflow.errors import RegistryError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
REGENERATE = ".venv/bin/python docs/hooks/config_reference.py --write-reference"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    import importlib.util
    import sys

    path = ROOT / "docs" / "hooks" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("docs_hook_reference_pages", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module.reference_pages()


def test_committed_reference_pages_are_fresh(pages: dict[str, str]) -> None:
    committed = {path.name: path.read_text(encoding="utf-8") for path in REFERENCE.glob("*.md")}
    stale = sorted(
        name for name in pages.keys() | committed.keys() if pages.get(name) != committed.get(name)
    )
    assert not stale, f"docs/reference/ is out of date ({', '.join(stale)}): run {REGENERATE}"


def test_every_reference_page_is_in_the_site_nav(pages: dict[str, str]) -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    reference = next(
        item["Reference"] for item in nav if isinstance(item, dict) and "Reference" in item
    )
    listed = {Path(next(iter(entry.values()))).name for entry in reference}
    assert listed == set(pages)


def test_pages_have_no_unexpanded_markers_and_pipes_stay_inside_cells(
    pages: dict[str, str],
) -> None:
    for name, text in pages.items():
        assert "<!-- voxelflow:" not in text, name
        for line in text.splitlines():
            if line.startswith("| <code>"):  # GitHub splits at every bare pipe: 4 cells
                assert len(re.findall(r"(?<!\\)\|", line)) == 5, (name, line)


@pytest.mark.parametrize("kind", sorted(REGISTRY_KINDS))
def test_every_option_has_a_type_default_and_meaning(kind: str) -> None:
    registry = load_registry(kind)
    missing = [
        f"{entry.name}.{option.name}"
        for entry in registry.entries()
        for option in component_options(kind, entry.name)
        if not option.meaning or not option.default
    ]
    assert not missing, f"{kind}: options without a meaning in their docstring's Args: {missing}"


def test_unet_page_and_list_options_show_the_same_text(capsys: pytest.CaptureFixture[str]) -> None:
    page = html.unescape((REFERENCE / "networks.md").read_text(encoding="utf-8"))
    page = re.sub(r"</?code>", "``", page)
    assert main(["list", "networks", "--options", "unet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    options = {o.name: o for o in component_options("networks", "unet")}
    # hand-checked against UNet's signature and docstring
    assert options["channels"].default == "[32, 64, 128, 256, 320]"
    assert options["num_convs"].type == "int" and options["num_convs"].default == "2"
    assert options["residual"].meaning.startswith("use residual units in the encoder")
    assert "in_channels" not in options and "spatial_dims" not in options
    for option in options.values():
        assert " ".join(option.meaning.split()) in out
        assert f"{option.name}: {option.type}" in out
        assert f"| ``{option.name}`` | ``{option.type}`` | ``{option.default}`` |" in page


def test_augmentations_include_the_base_options_passed_through_kwargs() -> None:
    names = [o.name for o in component_options("augmentations", "gaussian_noise")]
    assert names[:2] == ["mean", "std"] and {"p", "include", "exclude", "seed"} <= set(names)
    p = next(o for o in component_options("augmentations", "affine") if o.name == "p")
    assert p.default == "1.0" and "probability" in p.meaning


def test_docstring_args_are_parsed_with_continuations_and_bases() -> None:
    class Base:
        """Base.

        Args:
            p: probability of applying.
        """

        def __init__(self, *, p: float = 0.5) -> None: ...

    class Child(Base):
        """Child.

        Args:
            size (int): window size,
                in voxels.
            **kwargs: passed to Base.

        Returns:
            nothing: not an argument.
        """

        def __init__(self, size: int, **kwargs: float) -> None: ...

    meanings = docstring_arguments(Child)
    assert meanings["size"] == "window size, in voxels."
    assert meanings["p"] == "probability of applying."
    assert "nothing" not in meanings
    options = signature_options(Child, frozenset())
    assert [(o.name, o.default) for o in options] == [("size", "required"), ("p", "0.5")]
    assert options[0].required and options[0].type == "int"


def test_github_table_cells_keeps_pipes_inside_cells() -> None:
    text = "| `key` | `int | null` | plain \\| text |\n"
    assert github_table_cells(text) == (
        "| <code>key</code> | <code>int &#124; null</code> | plain \\| text |\n"
    )


def test_unknown_kind_and_name_suggest() -> None:
    with pytest.raises(RegistryError, match="Did you mean: 'networks'"):
        load_registry("netwroks")
    with pytest.raises(RegistryError, match="Did you mean: 'unet'"):
        options_text("networks", "unte")


def test_applications_list_their_task_options() -> None:
    options = {o.name: o for o in component_options("applications", "classification")}
    # hand-checked against ClassificationTask
    assert options["target_column"].required
    assert options["kind"].default == "class" and options["class_balanced"].default == "false"
    assert "table column" in options["target_column"].meaning
    assert component_options("applications", "segmentation") == []  # takes no task options
