"""docs/migration-niftynet.md is generated from the importer's tables and stays fresh."""

from __future__ import annotations

from pathlib import Path

from voxelflow.niftynet.docs import WORKED_EXAMPLES, render_page

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migration-niftynet.md"


def test_migration_page_is_what_the_importer_renders() -> None:
    rendered = render_page()
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/migration-niftynet.md is stale: run "
        "`python -m voxelflow.niftynet.docs docs/migration-niftynet.md`"
    )


def test_page_has_a_worked_example_per_application_and_every_key() -> None:
    from voxelflow.niftynet.defaults import NIFTYNET_DEFAULTS as TABLE

    text = PAGE.read_text(encoding="utf-8")
    commands = {command for _, command, _ in WORKED_EXAMPLES}
    assert commands == {"net_segment", "net_regress", "net_classify", "net_autoencoder", "net_gan"}
    for command in commands:
        assert f"{command} train -c example.ini" in text
    for section, keys in TABLE.items():
        if section == "REGISTRATION":
            continue
        for key in keys:
            assert f"| `{key}` |" in text, (section, key)
    assert "| `niftynet.network.toynet.ToyNet` | `toynet` | `{name: toynet}` |" in text


def test_rendering_the_docs_writes_nothing_in_the_working_folder(tmp_path, monkeypatch) -> None:
    import importlib.util

    monkeypatch.chdir(tmp_path)
    render_page()
    hook_path = PAGE.parents[0] / "hooks" / "niftynet_reference.py"
    spec = importlib.util.spec_from_file_location("niftynet_reference_hook", hook_path)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    hook.convert_one("NETWORK", "batch_size", "2")
    assert list(tmp_path.iterdir()) == []  # no ./model/niftynet_subjects.csv
