"""Disk tier: persistence, corruption, orphans, the directory lock and a full device."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tiergate.tiers import StorageError, TieredStore, TierFullError

from .helpers import check_invariants, config

MiB = 1 << 20


def object_files(root: Path) -> list[Path]:
    return sorted((root / "objects").rglob("*.obj"))


def file_of(store: TieredStore, ns: str, key: str) -> Path:
    e = store._entries[(ns, key)]
    return store.disk.file_path((ns, key), e.disk_id)


def test_objects_survive_close_and_reopen(tmp_path) -> None:
    values = {
        "b": b"bytes value" * 1000,
        "n": np.arange(3000, dtype=np.float64).reshape(30, 100),
        "t": torch.randn(4, 5, 6, dtype=torch.bfloat16),
    }
    with TieredStore(config(tmp_path)) as s:
        for k, v in values.items():
            s.put("ns", k, v, cost=3.0, ttl=1e6)
        s.put("ns", "b", b"second version")  # the newest version wins on reopen
        s.put("ns", "gone", b"deleted")
        s.delete("ns", "gone")
    with TieredStore(config(tmp_path)) as s:
        assert sorted(s.keys("ns")) == ["b", "n", "t"]
        assert s.get("ns", "b") == b"second version"
        assert np.array_equal(s.get("ns", "n"), values["n"])
        assert torch.equal(s.get("ns", "t"), values["t"])
        m = s.meta("ns", "n")
        assert m.cost == 3.0 and m.expires_at is not None and m.shape == (30, 100)
        check_invariants(s)
    assert len(object_files(tmp_path)) == 3  # replaced and deleted versions are gone


def test_reopen_restores_ttl_and_namespaces(tmp_path, clock) -> None:
    with TieredStore(config(tmp_path), clock=clock) as s:
        s.put("a", "k", b"A", ttl=10)
        s.put("b", "k", b"B")
    clock.advance(20)
    with TieredStore(config(tmp_path), clock=clock) as s:
        assert s.get("a", "k") is None
        assert s.get("b", "k") == b"B"


def test_corrupt_object_reads_as_miss_and_is_removed(tmp_path, caplog) -> None:
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        s.put("ns", "a", np.arange(600_000, dtype=np.int32))  # 2.3 MiB: three checksum blocks
        s.put("ns", "b", b"fine")
        path = file_of(s, "ns", "a")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) - 100)
            f.write(b"\xff" * 8)
        with caplog.at_level(logging.WARNING, logger="tiergate.tiers"):
            assert s.get("ns", "a") is None
        assert "unreadable" in caplog.text and "checksum" in caplog.text
        assert not path.exists() and s.meta("ns", "a") is None
        assert s.get("ns", "b") == b"fine"
        assert s.stats()["tiers"]["disk"]["errors"] == 1
        check_invariants(s)
    with TieredStore(config(tmp_path)) as s:
        assert s.keys("ns") == ["b"]


@pytest.mark.parametrize("damage", ["truncate", "empty", "header", "missing", "swap"])
def test_damaged_files_read_as_misses(tmp_path, damage, caplog) -> None:
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        s.put("ns", "a", b"a" * 5000)
        s.put("ns", "b", b"b" * 5000)
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        pa, pb = file_of(s, "ns", "a"), file_of(s, "ns", "b")
        if damage == "truncate":
            os.truncate(pa, 3000)
        elif damage == "empty":
            os.truncate(pa, 0)
        elif damage == "header":
            with open(pa, "r+b") as f:
                f.seek(20)
                f.write(b"\x00\x00")
        elif damage == "missing":
            pa.unlink()
        elif damage == "swap":  # b's (valid) file under a's name must not be served as a
            pa.write_bytes(pb.read_bytes())
        with caplog.at_level(logging.WARNING, logger="tiergate.tiers"):
            assert s.get("ns", "a") is None
        assert s.get("ns", "b") == b"b" * 5000
        assert not s.contains("ns", "a")
        check_invariants(s)


def test_torn_manifest_tail_is_discarded(tmp_path, caplog) -> None:
    with TieredStore(config(tmp_path)) as s:
        for i in range(10):
            s.put("ns", f"k{i}", bytes([i]) * 100)
    manifest = tmp_path / "manifest.log"
    size = manifest.stat().st_size
    with open(manifest, "ab") as f:
        f.write(b"\x50\x00\x00\x00garbage")  # a record header promising more than is there
    with caplog.at_level(logging.WARNING), TieredStore(config(tmp_path)) as s:
        assert sorted(s.keys("ns")) == sorted(f"k{i}" for i in range(10))
        assert s.get("ns", "k9") == bytes([9]) * 100
        s.put("ns", "after", b"x")
    assert "torn manifest tail" in caplog.text
    assert manifest.stat().st_size > size
    with TieredStore(config(tmp_path)) as s:
        assert s.get("ns", "after") == b"x"


def test_uncommitted_files_are_scrubbed(tmp_path) -> None:
    with TieredStore(config(tmp_path)) as s:
        s.put("ns", "a", b"keep")
    orphan = tmp_path / "objects" / "ab" / ("ab" * 16 + "-00000000000000ff.obj")
    orphan.write_bytes(b"half-written")
    os.utime(orphan, (time.time() - 60, time.time() - 60))
    with TieredStore(config(tmp_path)) as s:
        s.disk._scrub_thread.join()
        assert not orphan.exists()
        assert s.get("ns", "a") == b"keep"


def test_manifest_is_compacted(tmp_path) -> None:
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        s.disk.compact_min_records = 100
        for i in range(2000):
            s.put("ns", "same", i.to_bytes(4, "little"))
            if i % 2:
                s.delete("ns", "same")
        s.put("ns", "last", b"z")
    assert (tmp_path / "manifest.log").stat().st_size < 200 * 100
    with TieredStore(config(tmp_path)) as s:
        assert s.keys("ns") == ["last"]


def test_second_opener_of_a_directory_is_refused(tmp_path) -> None:
    with TieredStore(config(tmp_path)), pytest.raises(StorageError, match="in use by another process"):
        TieredStore(config(tmp_path))


def test_disk_budget_is_enforced_and_reapplied_on_reopen(tmp_path) -> None:
    with TieredStore(config(tmp_path, host={"enabled": False}, disk={"budget_bytes": 10_000})) as s:
        for i in range(20):
            s.put("ns", f"k{i}", bytes(1000))
            check_invariants(s)
        assert 5 <= len(s.keys("ns")) <= 9
    with TieredStore(config(tmp_path, host={"enabled": False}, disk={"budget_bytes": 4_000})) as s:
        check_invariants(s)
        assert 1 <= len(s.keys("ns")) <= 3
    cfg = config(tmp_path, host={"enabled": False}, disk={"budget_bytes": 4_000})
    with TieredStore(cfg) as s, pytest.raises(TierFullError):
        s.put("ns", "huge", bytes(8000))


# ---- a real full device ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_device_gives_a_clear_error_and_other_tiers_keep_serving(tmp_path) -> None:
    with small_tmpfs(tmp_path / "small", "2m") as mnt:
        cfg = config(mnt, host={"budget_bytes": 64 * MiB}, disk={"budget_bytes": 1 << 30})
        with TieredStore(cfg) as s:
            s.put("ns", "a", np.ones(MiB // 2, dtype=np.uint8))
            s.put("ns", "pinned", np.ones(MiB // 2, dtype=np.uint8))
            s.pin("ns", "pinned")
            with pytest.raises(TierFullError) as ei:
                s.put("ns", "huge", np.ones(3 * MiB, dtype=np.uint8))
            msg = str(ei.value)
            assert "disk tier full" in msg and str(mnt) in msg and ei.value.tier == "disk"
            assert s.get("ns", "huge") is None
            assert s.get("ns", "pinned")[0] == 1  # host keeps serving
            # the tier was over-budgeted for this device: it gives back its own unpinned space
            for i in range(6):
                s.put("ns", f"k{i}", np.full(MiB // 2, i, dtype=np.uint8))
            assert s.get("ns", "k5")[0] == 5
            assert s.stats()["tiers"]["disk"]["errors"] >= 2
            check_invariants(s)
            assert not list(mnt.rglob("*.tmp"))
        with TieredStore(cfg) as s:
            assert s.get("ns", "pinned")[0] == 1 and s.get("ns", "k5")[0] == 5


def test_files_of_the_old_crc32_format_still_read(tmp_path, monkeypatch, caplog) -> None:
    from tiergate.tiers import codec

    values = {"b": b"old bytes" * 300_000, "n": np.arange(700_000, dtype=np.int32), "t": torch.randn(9, 7)}
    monkeypatch.setattr(codec, "WRITE_SUM", "crc32")
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        for k, v in values.items():
            s.put("ns", k, v)
    monkeypatch.undo()
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        assert all(file_of(s, "ns", k).read_bytes()[:4] == b"TGO1" for k in values)
        assert s.get("ns", "b") == values["b"]
        assert np.array_equal(s.get("ns", "n"), values["n"])
        assert torch.equal(s.get("ns", "t"), values["t"])
        s.put("ns", "new", b"x")  # new objects get the new format
        assert file_of(s, "ns", "new").read_bytes()[:4] == b"TGO2"
        path = file_of(s, "ns", "n")
        with open(path, "r+b") as f:  # an old file is still checked
            f.seek(os.path.getsize(path) - 10)
            f.write(b"\x00" * 4)
        with caplog.at_level(logging.WARNING, logger="tiergate.tiers"):
            assert s.get("ns", "n") is None
        assert "checksum" in caplog.text and not s.contains("ns", "n")
        check_invariants(s)


def test_get_many_skips_damaged_disk_objects(tmp_path) -> None:
    with TieredStore(config(tmp_path, host={"enabled": False})) as s:
        for i in range(6):
            s.put("ns", f"k{i}", np.full(300_000, i, dtype=np.int32))
        path = file_of(s, "ns", "k2")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) - 10)
            f.write(b"\xff" * 4)
        os.truncate(file_of(s, "ns", "k4"), 100)
        got = s.get_many("ns", ["k0", "k1", "k2", "k3", "k4", "k5", "k1", "missing"])
        assert list(got) == ["k0", "k1", "k3", "k5"]
        assert all(int(got[k][0]) == int(k[1]) and got[k].shape == (300_000,) for k in got)
        assert not s.contains("ns", "k2") and not s.contains("ns", "k4")
        check_invariants(s)


def test_concurrent_puts_share_one_manifest_fsync(tmp_path, monkeypatch) -> None:
    """Group commit: puts that commit while an fsync is pending are all covered by the next one,
    and every one of them is durable when its put returns."""
    with TieredStore(config(tmp_path, disk={"fsync": True}, host={"enabled": False})) as s:
        s.put("ns", "first", b"x")
        fsyncs: list[int] = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
        disk = s.disk
        with disk._sync_lock:  # an fsync in flight: the puts below commit and wait behind it
            threads = [threading.Thread(target=s.put, args=("ns", f"k{i}", b"v" * 100)) for i in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while len(disk._live) < 5 and time.monotonic() < deadline:  # all four committed
                time.sleep(0.01)
            object_fsyncs = len(fsyncs)
        for t in threads:
            t.join()
        assert object_fsyncs == 4  # each object file on its own
        assert len(fsyncs) - object_fsyncs == 1  # the four manifest records in one fsync
        assert disk._synced == disk._appended
    with TieredStore(config(tmp_path)) as s:
        assert sorted(s.keys("ns")) == ["first", "k0", "k1", "k2", "k3"]


def test_delete_many_removes_every_key_and_counts_those_it_had(tmp_path) -> None:
    with TieredStore(config(tmp_path)) as s:
        s.put_many("ns", {"a": b"1", "b": b"2", "c": b"3"})
        assert s.delete_many("ns", ["a", "c", "missing"]) == 2
        assert s.keys("ns") == ["b"]
        check_invariants(s)
    with TieredStore(config(tmp_path)) as s:
        assert s.keys("ns") == ["b"]
    assert len(object_files(tmp_path)) == 1
