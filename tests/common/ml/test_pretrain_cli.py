"""``semalign pretrain`` (issue 16, defect 15): it shows its progress, and it never replaces a
bundle (of another dataset or not) unless asked with ``--force``, nor anything that is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import BundleError
from common.ml import pretrain_cli
from common.ml.bundle import META_FILE


def fake_bundle(path: Path, dataset: str = "mnist") -> Path:
    path.mkdir(parents=True)
    (path / META_FILE).write_text(json.dumps({"dataset": dataset, "hash": "ab" * 32}))
    (path / "weights.pt").write_bytes(b"precious")
    return path


def test_an_existing_bundle_is_kept_without_force(tmp_path: Path) -> None:
    out = fake_bundle(tmp_path / "bundle")
    with pytest.raises(BundleError, match=r"already holds a bundle of dataset 'mnist', hash abababababab: pass --force"):
        pretrain_cli.main(["--dataset", "digits", "--epochs", "1", "--out", str(out)])
    assert (out / "weights.pt").read_bytes() == b"precious"


@pytest.mark.parametrize("force", [False, True])
def test_a_directory_that_is_no_bundle_is_never_replaced(tmp_path: Path, force: bool) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="holds no bundle"):
        pretrain_cli.check_out(out, force)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("make", ["absent", "empty"])
def test_a_new_or_empty_directory_is_fine(tmp_path: Path, make: str) -> None:
    out = tmp_path / "b"
    if make == "empty":
        out.mkdir()
    pretrain_cli.check_out(out, force=False)


def test_force_replaces_a_bundle_and_progress_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fake_bundle(tmp_path / "bundle")
    assert pretrain_cli.main(["--dataset", "digits", "--epochs", "2", "--bank", "10", "--out", str(out), "--force"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["dataset"] == "digits" and not (out / "weights.pt").exists()
    err = capsys.readouterr().err
    # Off a TTY: plain lines, at least the last step of each long phase.
    assert "pretrain: loading digits" in err
    assert "pretrain epochs [########################] 2/2 loss" in err
    assert "bank adapters [########################] 1/1 alpha 10" in err


def test_ensure_bundle_never_rebuilds_another_datasets_bundle(tmp_path: Path) -> None:
    from common.ml.pretrain import ensure_bundle

    out = tmp_path / "bundle"
    ensure_bundle("digits", out=out)
    before = (out / META_FILE).read_bytes()
    with pytest.raises(BundleError, match="holds a bundle of dataset 'digits', not 'mnist'"):
        ensure_bundle("mnist", out=out)
    assert (out / META_FILE).read_bytes() == before
