from __future__ import annotations

import errno
import os
import subprocess
import sys

import lmdb
import pytest

from objstore import errors
from objstore.engine.environment import make_directory, open_environment, refusing_damage

_OPEN = """
import sys
from pathlib import Path
from objstore import errors
from objstore.engine.environment import open_environment
try:
    env = open_environment(Path(sys.argv[1]), readonly=True, max_dbs=2)
    env.open_db(b"t", create=False)
except errors.StoreCorrupt as exc:
    print(exc)
"""


def _environment_with_a_table(path) -> None:
    env = lmdb.open(str(path), max_dbs=2, writemap=False)
    table = env.open_db(b"t")
    with env.begin(write=True) as txn:
        for n in range(2000):
            txn.put(b"%05d" % n, b"x" * 200, db=table)
    env.close()


def test_a_cut_short_environment_is_store_corrupt_not_sigbus(tmp_path):
    _environment_with_a_table(tmp_path)
    data = tmp_path / "data.mdb"
    data.write_bytes(data.read_bytes()[: 3 * 4096])  # the headers and a page, not the rest
    child = subprocess.run(
        [sys.executable, "-c", _OPEN, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-500:])  # -7: SIGBUS
    assert "data.mdb is 12,288 bytes, its pages take" in child.stdout
    assert f"{tmp_path} is damaged or not an objstore store" in child.stdout


def test_files_that_are_not_an_environment_are_store_corrupt(tmp_path):
    (tmp_path / "data.mdb").write_bytes(b"not lmdb" * 1000)
    with pytest.raises(errors.StoreCorrupt, match="not an objstore store") as caught:
        open_environment(tmp_path)
    assert isinstance(caught.value.__cause__, lmdb.InvalidError)


def test_refusing_damage_closes_the_environment_and_keeps_other_errors(tmp_path):
    _environment_with_a_table(tmp_path)
    env = open_environment(tmp_path, max_dbs=2)
    with pytest.raises(errors.StoreCorrupt), refusing_damage(tmp_path, env):
        raise lmdb.CorruptedError("page was wrong type")
    with pytest.raises(lmdb.Error):  # closed
        env.stat()
    env = open_environment(tmp_path, max_dbs=2)
    with pytest.raises(KeyError), refusing_damage(tmp_path, env):
        raise KeyError("not damage")
    with pytest.raises(lmdb.Error):
        env.stat()


def test_opening_nothing_read_only_is_store_not_found(tmp_path):
    with pytest.raises(errors.StoreNotFound, match=r"no store in .*missing to open read-only"):
        open_environment(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_store_that_cannot_be_written_is_store_read_only(tmp_path, monkeypatch, code):
    """lmdb.open for writing on a read-only disk or without permission (as root, neither
    can be made here without a mount, so LMDB's error is raised in its place)."""
    _environment_with_a_table(tmp_path)

    def refused(path: str, **options: object) -> None:
        raise lmdb.Error(f"{path}: {os.strerror(code)}")

    monkeypatch.setattr(lmdb, "open", refused)
    with pytest.raises(errors.StoreReadOnly, match=r"cannot be opened for writing .*read-only"):
        open_environment(tmp_path, max_dbs=2)
    with pytest.raises(lmdb.Error):  # read-only opens keep LMDB's error: nothing to redirect
        open_environment(tmp_path, max_dbs=2, readonly=True)


def test_a_file_where_a_store_would_be_made_is_store_not_found(tmp_path):
    (tmp_path / "models.dump").write_bytes(b"id\t{}\n")
    with pytest.raises(errors.StoreNotFound, match=r"models\.dump is a file, not a store's"):
        make_directory(tmp_path / "models.dump")
    assert (tmp_path / "models.dump").read_bytes() == b"id\t{}\n"
    with pytest.raises(NotADirectoryError, match=r"cannot make the store's directory .*dump/s"):
        make_directory(tmp_path / "models.dump" / "s")  # under a file: the OSError says so
    make_directory(tmp_path / "a" / "b")
    make_directory(tmp_path / "a" / "b")  # there already: nothing to do
    assert (tmp_path / "a" / "b").is_dir()
