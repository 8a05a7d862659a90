"""Small objects written into the disk tier's manifest instead of files of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiergate.tiers import TieredStore
from tiergate.tiers.disk import is_inline

from .helpers import check_invariants, config

SMALL = 4 << 10


def inline_config(tmp: Path, **kw):
    return config(tmp, disk={"inline_max_bytes": SMALL}, **kw)


def files(root: Path) -> list[Path]:
    return sorted((root / "objects").rglob("*.obj"))


def test_small_objects_live_in_the_manifest_and_survive_reopen(tmp_path) -> None:
    values = {"b": b"answer" * 100, "n": np.arange(64, dtype=np.float32), "t": torch.arange(32, dtype=torch.int16)}
    with TieredStore(inline_config(tmp_path)) as s:
        for k, v in values.items():
            s.put("ns", k, v, ttl=1e6)
        s.put("ns", "big", b"x" * (2 * SMALL))  # over the limit: a file
        s.put("ns", "grows", b"small")
        s.put("ns", "grows", b"y" * (2 * SMALL))  # an inline object replaced by a file
        s.put("ns", "shrinks", b"z" * (2 * SMALL))
        s.put("ns", "shrinks", b"small again")  # and the other way round
        s.put("ns", "gone", b"deleted")
        s.delete("ns", "gone")
        check_invariants(s)
    assert len(files(tmp_path)) == 2  # "big" and "grows"; the replaced file is removed
    with TieredStore(inline_config(tmp_path)) as s:
        assert sorted(s.keys("ns")) == ["b", "big", "grows", "n", "shrinks", "t"]
        assert s.get("ns", "b", as_="bytes") == values["b"]
        assert np.array_equal(s.get("ns", "n"), values["n"])
        assert torch.equal(s.get("ns", "t"), values["t"])
        assert s.get("ns", "shrinks") == b"small again" and s.get("ns", "grows") == b"y" * (2 * SMALL)
        inline = {k for (_, k), r in s.disk._live.items() if is_inline(r[9])}
        assert inline == {"b", "n", "t", "shrinks"}
        check_invariants(s)


def test_compaction_moves_inline_objects_and_reads_follow_them(tmp_path) -> None:
    # Host memory too small for anything: every read goes to the disk tier.
    cfg = inline_config(tmp_path, host={"budget_bytes": 0})
    with TieredStore(cfg) as s:
        s.disk.compact_min_records = 20
        for round_ in range(6):  # each round replaces every key: dead records pile up, compactions run
            for i in range(30):
                s.put("ns", f"k{i}", f"{round_}:{i}".encode() * 20)
            if round_ == 3:
                s.delete_many("ns", [f"k{i}" for i in range(20, 30)])
            for i in range(20):
                assert s.get("ns", f"k{i}") == f"{round_}:{i}".encode() * 20
        assert s.disk._records < 120  # compacted along the way
        check_invariants(s)
    with TieredStore(cfg) as s:
        assert sorted(s.keys("ns")) == sorted(f"k{i}" for i in range(30))
        assert all(s.get("ns", f"k{i}") == f"5:{i}".encode() * 20 for i in range(30))
    assert files(tmp_path) == []


def test_a_damaged_inline_object_is_a_miss_and_the_rest_survive(tmp_path, caplog) -> None:
    cfg = inline_config(tmp_path, host={"budget_bytes": 0})
    with TieredStore(cfg) as s:
        for i in range(5):
            s.put("ns", f"k{i}", f"value {i} ".encode() * 50)
    manifest = tmp_path / "manifest.log"
    data = bytearray(manifest.read_bytes())
    at = data.find(b"value 2 value 2")
    data[at + 3] ^= 0xFF  # bit rot inside one object's bytes
    manifest.write_bytes(bytes(data))
    with TieredStore(cfg) as s:
        assert s.get("ns", "k2") is None  # checksum mismatch: removed, reported as a miss
        assert "unreadable" in caplog.text
        assert [s.get("ns", f"k{i}") for i in (0, 1, 3, 4)] == [f"value {i} ".encode() * 50 for i in (0, 1, 3, 4)]
        assert sorted(s.keys("ns")) == ["k0", "k1", "k3", "k4"]
        check_invariants(s)


def test_a_torn_inline_record_is_cut_off_at_reopen(tmp_path) -> None:
    with TieredStore(inline_config(tmp_path)) as s:
        s.put("ns", "kept", b"kept" * 100)
        s.put("ns", "torn", b"torn" * 100)
    manifest = tmp_path / "manifest.log"
    data = manifest.read_bytes()
    manifest.write_bytes(data[: data.find(b"torntorn") + 10])  # a crash mid-append of the last record
    with TieredStore(inline_config(tmp_path)) as s:
        assert s.keys("ns") == ["kept"] and s.get("ns", "kept") == b"kept" * 100
