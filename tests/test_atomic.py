import pytest

from unified_framework.utils.atomic import atomic_path, write_text_atomic


def test_file_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_replaced_and_suffix_kept(tmp_path):
    target = tmp_path / "vol.zarr"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".zarr")
        tmp.mkdir()
        (tmp / "fresh").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    assert [p.name for p in tmp_path.iterdir()] == ["vol.zarr"]
