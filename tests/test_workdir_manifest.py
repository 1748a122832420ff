"""The work-folder manifest: what a resumable folder holds, checked files, removal that a kill cannot confuse."""

from __future__ import annotations

import shutil

import pytest

from unified_framework.errors import InputError
from unified_framework.utils import workdir_manifest
from unified_framework.utils.workdir_manifest import (
    INVALID_MARKER,
    Manifest,
    discard_if_invalid,
    read_checked,
    remove_work_folder,
    write_checked,
)


def test_manifest_reports_missing_and_damaged_pieces(tmp_path):
    manifest = Manifest(tmp_path)
    for name in ("a", "b", "c", "d"):
        manifest.write(name, name.encode() * 100)
    manifest.commit({"done": 4})
    (tmp_path / "a").unlink()
    (tmp_path / "b").write_bytes(b"b" * 50)  # truncated
    (tmp_path / "c").write_bytes(b"x" + b"c" * 99)  # same size, other bytes
    loaded = Manifest(tmp_path)
    assert loaded.load() and loaded.state == {"done": 4}
    result = loaded.verify()
    assert (
        result.missing == ["a"] and result.damaged == ["b", "c"] and result.bad == ["a", "b", "c"]
    )
    with pytest.raises(InputError, match="missing"):
        loaded.read("a")
    with pytest.raises(InputError, match="50 bytes, 100 recorded"):
        loaded.read("b")
    loaded.forget(result.bad)
    assert sorted(loaded.records) == ["d"] and not (tmp_path / "b").exists()


def test_pieces_rewritten_after_a_commit_verify_through_the_journal(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.write("chunk", b"1" * 10)
    manifest.commit({"step": 1})
    manifest.write("chunk", b"2" * 10)  # e.g. evicted from a cache between checkpoints
    manifest.write("new", b"3" * 10)
    # Killed here: the manifest still describes step 1; the journal knows the later versions.
    killed = Manifest(tmp_path)
    assert killed.load() and killed.state == {"step": 1} and killed.verify().ok
    assert sorted(killed.records) == ["chunk", "new"]
    # The previous version of a rewritten piece verifies too (the kill came before the rename).
    (tmp_path / "chunk").write_bytes(b"1" * 10)
    assert killed.verify().ok and killed.records["chunk"].crc32 == workdir_manifest.checksum(
        b"1" * 10
    )
    # A torn last journal line (killed while appending) is ignored.
    with open(tmp_path / workdir_manifest.JOURNAL_NAME, "a") as journal:
        journal.write("1 other 10 12")
    assert Manifest(tmp_path).load() and "other" not in Manifest(tmp_path).records
    # Without the journal, a rewritten piece no longer matches: it is reported, not trusted.
    (tmp_path / "chunk").write_bytes(b"2" * 10)
    (tmp_path / workdir_manifest.JOURNAL_NAME).unlink()
    bare = Manifest(tmp_path)
    bare.load()
    assert bare.verify().damaged == ["chunk"]
    # After a commit, only the committed version is valid.
    manifest.commit()
    (tmp_path / "chunk").write_bytes(b"1" * 10)
    again = Manifest(tmp_path)
    again.load()
    assert again.verify().damaged == ["chunk"]


def test_a_missing_or_unreadable_manifest_means_nothing_is_known(tmp_path):
    assert not Manifest(tmp_path).load()
    (tmp_path / workdir_manifest.MANIFEST_NAME).write_text('{"version": 1, "sequ')
    manifest = Manifest(tmp_path)
    assert not manifest.load() and manifest.records == {} and manifest.state == {}


def test_checked_files_detect_truncation_and_changed_bytes(tmp_path):
    path = tmp_path / "copy.raw"
    assert read_checked(path, 4) is None
    write_checked(path, b"data")
    assert read_checked(path, 4)[:4] == b"data"
    assert read_checked(path, 5) is None
    path.write_bytes(b"dama" + path.read_bytes()[4:])
    assert read_checked(path, 4) is None
    assert read_checked(path, 4, verify=False) is not None  # size only, for a copy verified before
    path.write_bytes(path.read_bytes()[:6])
    assert read_checked(path, 4, verify=False) is None


def test_a_removal_killed_half_way_is_finished_not_resumed(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    for name in ("store/manifest.json", "store/0.0.0.0", "plan.json", "input/0/0.0.0.raw"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    real_rmtree = shutil.rmtree
    deleted = []

    def killed_after_one(path, *args, **kwargs):
        if deleted:
            raise KeyboardInterrupt("simulated kill")
        deleted.append(path)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(workdir_manifest.shutil, "rmtree", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        remove_work_folder(folder)
    monkeypatch.setattr(workdir_manifest.shutil, "rmtree", real_rmtree)
    # Something is left, and the marker says it is not work to resume.
    assert (folder / INVALID_MARKER).exists() and len(list(folder.iterdir())) > 1
    assert discard_if_invalid(folder) and not folder.exists()
    assert not discard_if_invalid(folder)
    folder.mkdir()
    assert not discard_if_invalid(folder) and folder.exists()  # an ordinary folder is left alone
