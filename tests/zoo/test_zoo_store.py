"""Pack a run folder, install, list, resolve and remove entries; every refusal of bad entries."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
from voxelflow.errors import ConfigError, DataError, RegistryError, SecurityError
from voxelflow.zoo import (
    install,
    installed_entries,
    load_card,
    remove,
    resolve_model,
    trusted_plugins,
)
from voxelflow.zoo.entry import sha256_of
from voxelflow.zoo.pack import pack_run
from voxelflow.zoo.store import load_weights, read_index, verify_entry


def _best_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(find_checkpoint(run_dir))["modules"]["network"]


def _assert_home_clean(home: Path) -> None:
    entries = home / "entries"
    assert not entries.exists() or not any(entries.iterdir())
    assert (
        not [p for p in home.iterdir() if p.name.startswith(".incoming")] if home.exists() else True
    )


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ""])
def test_pack_install_resolve_remove(
    run_dir: Path, zoo_home: Path, tmp_path: Path, suffix: str
) -> None:
    out = pack_run(run_dir, out=tmp_path / f"brain{suffix}", card={"license": "CC-BY-4.0"})
    model = install(out)
    assert model.path == zoo_home / "entries" / "brain"
    card = model.card
    assert (card.name, card.license, card.application) == ("brain", "CC-BY-4.0", "segmentation")
    assert card.inputs.modalities == ["t1"] and card.inputs.spacing == [1.0, 1.0, 2.5]
    assert card.outputs.channels == 3 and card.outputs.label_values == [0, 1, 4]
    assert card.metrics == {"dice": pytest.approx(0.8)}
    assert card.network["name"] == "toynet" and card.network["in_channels"] == 1
    assert set(card.sha256) == {
        "config.yaml",
        "weights/network.pt",
        "preprocessing.json",
        "README.md",
    }
    weights = load_weights(model.weights_path, entry=card.name)
    best = _best_state(run_dir)  # step 10, not step 5
    assert weights.keys() == best.keys()
    assert all(torch.equal(weights[k], best[k]) for k in best)
    assert model.fitted_state_path is not None and model.fitted_state_path.is_file()
    assert resolve_model("brain").path == model.path
    assert [m.card.name for m in installed_entries()] == ["brain"]
    remove("brain")
    assert installed_entries() == []
    with pytest.raises(RegistryError, match=r"brain"):
        resolve_model("brain")


def test_safetensors_weights(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    out = pack_run(run_dir, out=tmp_path / "st.zip", name="st", weights_format="safetensors")
    model = install(out)
    assert model.weights_path.suffix == ".safetensors"
    best = _best_state(run_dir)
    loaded = load_weights(model.weights_path, entry="st")
    assert all(torch.equal(loaded[k], best[k]) for k in best)


def test_install_twice_needs_force(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    out = pack_run(run_dir, out=tmp_path / "brain.zip")
    install(out)
    with pytest.raises(DataError, match=r"already installed"):
        install(out)
    assert install(out, force=True).card.name == "brain"
    assert [p.name for p in (zoo_home).iterdir() if p.name.startswith(".")] == []


def test_resolve_suggests_close_name(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    install(pack_run(run_dir, out=tmp_path / "brain.zip"))
    with pytest.raises(RegistryError, match=r"(?i)did you mean.*brain"):
        resolve_model("brian")


def test_install_by_index_name(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    out = pack_run(run_dir, out=tmp_path / "brain.tar.gz")
    zoo_home.mkdir(parents=True)
    record = {"name": "brain", "version": "1.0.0", "source": str(out), "description": "toy"}
    (zoo_home / "index.json").write_text(__import__("json").dumps({"entries": [record]}))
    assert read_index() == [record]
    assert install("brain").card.name == "brain"


# --- refusals --------------------------------------------------------------------------------


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "entry/../../evil.txt", "/tmp/evil_abs.txt"])
def test_zip_path_traversal_refused(zoo_home: Path, tmp_path: Path, member: str) -> None:
    archive = _zip_with(tmp_path / "bad.zip", {"entry/model.yaml": b"name: x\n", member: b"boom"})
    with pytest.raises(SecurityError, match=r"refused member"):
        install(archive)
    assert not (tmp_path / "evil.txt").exists() and not (zoo_home.parent / "evil.txt").exists()
    _assert_home_clean(zoo_home)


def _tar_with_link(path: Path, link: str, target: str, *, hard: bool) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        data = b"name: x\n"
        info = tarfile.TarInfo("entry/model.yaml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(link)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        archive.addfile(info)
    return path


@pytest.mark.parametrize(
    ("target", "hard"), [("../../outside.txt", False), ("/etc/passwd", False), ("../x", True)]
)
def test_tar_link_escaping_refused(zoo_home: Path, tmp_path: Path, target: str, hard: bool) -> None:
    archive = _tar_with_link(tmp_path / "bad.tar.gz", "entry/link", target, hard=hard)
    with pytest.raises(SecurityError, match=r"link"):
        install(archive)
    _assert_home_clean(zoo_home)


def test_folder_symlink_escaping_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (entry / "leak.txt").symlink_to(secret)
    with pytest.raises(SecurityError, match=r"symlink.*escaping"):
        install(entry)
    _assert_home_clean(zoo_home)


def test_checksum_mismatch_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    state = torch.load(entry / "weights" / "network.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, entry / "weights" / "network.pt")
    with pytest.raises(SecurityError, match=r"checksum mismatch.*weights/network.pt"):
        install(entry)
    _assert_home_clean(zoo_home)


class Payload:
    """An arbitrary object: loading it would need unpickling of code."""

    def __reduce__(self):
        return (print, ("code ran",))


def _rewrite_card(entry: Path, **changes: object) -> None:
    card = yaml.safe_load((entry / "model.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    card["sha256"] = {name: sha256_of(entry / name) for name in card["sha256"]}
    (entry / "model.yaml").write_text(yaml.safe_dump(card))


def test_pickled_code_in_weights_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry", name="pickly")
    torch.save({"weight": torch.zeros(1), "extra": Payload()}, entry / "weights" / "network.pt")
    _rewrite_card(entry)  # checksums match: only the unpickling check can refuse it
    with pytest.raises(SecurityError, match=r"'pickly'.*arbitrary unpickling"):
        install(entry)
    _assert_home_clean(zoo_home)


def test_card_unknown_key_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    _rewrite_card(entry, licence_typo="MIT")
    with pytest.raises(ConfigError, match=r"licence_typo: unknown key"):
        install(entry)
    _assert_home_clean(zoo_home)


def test_card_missing_field_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    _rewrite_card(entry, version=None)
    with pytest.raises(ConfigError, match=r"version: missing required field"):
        load_card(entry)
    with pytest.raises(ConfigError):
        install(entry)
    _assert_home_clean(zoo_home)


def test_unlisted_file_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    (entry / "sneaky.py").write_text("import os\n")
    with pytest.raises(SecurityError, match=r"sneaky.py"):
        verify_entry(entry)
    _assert_home_clean(zoo_home)


def test_plugins_need_trust_and_failures_name_the_entry(
    run_dir: Path, zoo_home: Path, tmp_path: Path
) -> None:
    good, bad = tmp_path / "zoo_good_plugin_h.py", tmp_path / "zoo_bad_plugin_h.py"
    good.write_text("VALUE = 42\n")
    bad.write_text("raise ImportError('needs package nothere')\n")
    model = install(pack_run(run_dir, out=tmp_path / "p.zip", name="plug", plugins=[good]))
    with pytest.raises(SecurityError, match=r"--trust-code"):
        trusted_plugins(model, False)
    assert trusted_plugins(model, True)[0].VALUE == 42
    broken = install(pack_run(run_dir, out=tmp_path / "b.zip", name="broken", plugins=[bad]))
    with pytest.raises(RegistryError, match=r"'broken'.*zoo_bad_plugin_h.py.*nothere"):
        trusted_plugins(broken, True)


def test_zip_symlink_refused(zoo_home: Path, tmp_path: Path) -> None:
    import stat

    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("entry/model.yaml", "name: x\n")
        info = zipfile.ZipInfo("entry/weights.pt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "../../../etc/passwd")
    with pytest.raises(SecurityError, match=r"symlink"):
        install(archive)
    _assert_home_clean(zoo_home)


def test_file_url_install(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    out = pack_run(run_dir, out=tmp_path / "url.zip", name="from-url")
    assert install(out.resolve().as_uri()).card.name == "from-url"


def test_newer_torch_requirement_refused(run_dir: Path, zoo_home: Path, tmp_path: Path) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry", name="future")
    _rewrite_card(entry, requires={"voxelflow": "0.0.1", "torch": "99.0"})
    with pytest.raises(DataError, match=r"'future'.*expected torch >= 99.0"):
        install(entry)
    _assert_home_clean(zoo_home)


def test_archive_without_card_refused(zoo_home: Path, tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "empty.zip", {"a/readme.txt": b"hello"})
    with pytest.raises(DataError, match=r"expected model.yaml"):
        install(archive)
    _assert_home_clean(zoo_home)


@pytest.mark.parametrize("name", ["../../evil", "/abs", ".hidden", "a/b"])
def test_card_name_cannot_escape_the_zoo_home(
    run_dir: Path, zoo_home: Path, tmp_path: Path, name: str
) -> None:
    entry = pack_run(run_dir, out=tmp_path / "entry")
    _rewrite_card(entry, name=name)
    with pytest.raises(ConfigError, match=r"name: "):
        install(entry)
    _assert_home_clean(zoo_home)
    assert not (tmp_path / "evil").exists()


def test_safetensors_entry_needs_only_the_project_torch_bound_and_no_torch_load(
    run_dir: Path, zoo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import requires

    bound = next(r for r in requires("voxelflow") or [] if r.startswith("torch>="))
    out = pack_run(run_dir, out=tmp_path / "st.zip", name="st", weights_format="safetensors")
    model = install(out)
    assert model.card.requires.torch == bound.removeprefix("torch>=")

    def no_pickles(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load called for a safetensors entry")

    best = _best_state(run_dir)
    monkeypatch.setattr(torch, "load", no_pickles)
    loaded = load_weights(model.weights_path, entry="st")
    assert all(torch.equal(loaded[k], best[k]) for k in best)
