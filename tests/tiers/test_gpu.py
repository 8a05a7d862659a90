"""GPU tier (runs where CUDA exists)."""

from __future__ import annotations

import pytest
import torch

from tiergate.tiers import TieredStore

from .helpers import check_invariants, config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")

MiB = 1 << 20


def gpu_cfg(tmp=None, **kw):
    return config(tmp, gpu={"enabled": True, "budget_bytes": 4 * MiB}, host={"budget_bytes": 8 * MiB}, **kw)


def kv(i: int) -> torch.Tensor:  # 1 MiB fp16
    return torch.full((512, 1024), float(i), dtype=torch.float16)


def test_gpu_tier_holds_tensors_and_demotes_to_pinned_host(tmp_path) -> None:
    with TieredStore(gpu_cfg(tmp_path, policy="lru")) as s:
        for i in range(6):
            s.put("kv", f"c{i}", kv(i))
        tiers = [str(s.meta("kv", f"c{i}").tier) for i in range(6)]
        assert tiers == ["host", "host", "gpu", "gpu", "gpu", "gpu"]
        assert s.stats()["tiers"]["gpu"]["demotions"] == 2
        host_copy = s._entries[("kv", "c0")].value
        assert host_copy.device.type == "cpu" and host_copy.is_pinned()
        g = s.get("kv", "c5")
        assert g.device.type == "cuda" and torch.equal(g.cpu(), kv(5))
        check_invariants(s)


def test_cuda_get_promotes_host_and_disk_objects_to_gpu(tmp_path) -> None:
    with TieredStore(gpu_cfg(tmp_path)) as s:
        s.put("kv", "a", kv(1), tier="host")
        s.put("kv", "b", kv(2), tier="disk")
        assert str(s.meta("kv", "a").tier) == "host" and str(s.meta("kv", "b").tier) == "disk"
        a = s.get("kv", "a", device="cuda")
        b = s.get("kv", "b", device="cuda")
        torch.cuda.synchronize()
        assert a.is_cuda and b.is_cuda and torch.equal(b.cpu(), kv(2))
        assert str(s.meta("kv", "a").tier) == "gpu" and str(s.meta("kv", "b").tier) == "gpu"
        assert s.get("kv", "b", device="cpu").device.type == "cpu"
        check_invariants(s)


def test_prefetch_to_gpu(tmp_path) -> None:
    with TieredStore(gpu_cfg(tmp_path)) as s:
        for i in range(3):
            s.put("kv", f"c{i}", kv(i), tier="host")
        done = s.prefetch("kv", ["c0", "c1", "c2", "missing"], to="gpu").result(timeout=60)
        assert sorted(done) == ["c0", "c1", "c2"]
        assert all(str(s.meta("kv", f"c{i}").tier) == "gpu" for i in range(3))
        check_invariants(s)


def test_bytes_never_go_to_the_gpu(tmp_path) -> None:
    with TieredStore(gpu_cfg(tmp_path)) as s:
        s.put("cache", "x", b"abc")
        assert str(s.meta("cache", "x").tier) == "host"
        assert s.get("cache", "x", device="cuda").is_cuda


def test_bytes_load_to_the_gpu_through_pinned_staging(tmp_path) -> None:
    blobs = {f"b{i}": bytes([i]) * (3 * MiB + 7) for i in range(4)} | {"empty": b""}
    with TieredStore(gpu_cfg(tmp_path)) as s:
        s.put_many("cache", blobs)
        got = {k: s.get("cache", k, device="cuda") for k in blobs}  # async copies, then reuse of staging
        torch.cuda.synchronize()
        for k, v in blobs.items():
            assert got[k].is_cuda and got[k].dtype == torch.uint8 and bytes(got[k].cpu().numpy()) == v
