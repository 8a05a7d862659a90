"""Tiered object store: GPU memory, host RAM, local disk and Redis under one interface.

from tiergate.tiers import StoreConfig, TieredStore

with TieredStore(StoreConfig(disk={"path": "var/tiers"})) as store:
    store.put("kv", chunk_key, kv_tensor, cost=12.0)
    kv = store.get("kv", chunk_key, device="cuda")
"""

from tiergate.tiers.base import Kind, ObjectMeta, TierName, namespace_group
from tiergate.tiers.config import (
    DiskTierConfig,
    GpuTierConfig,
    HostTierConfig,
    RedisTierConfig,
    StoreConfig,
)
from tiergate.tiers.errors import CorruptObjectError, StorageError, TierFullError, TierUnavailableError
from tiergate.tiers.metrics import TierStatsCollector
from tiergate.tiers.policies import GDSFPolicy, LRUPolicy, Policy, make_policy
from tiergate.tiers.stats import TierStats
from tiergate.tiers.store import TieredStore

__all__ = [
    "CorruptObjectError",
    "DiskTierConfig",
    "GDSFPolicy",
    "GpuTierConfig",
    "HostTierConfig",
    "Kind",
    "LRUPolicy",
    "ObjectMeta",
    "Policy",
    "RedisTierConfig",
    "StorageError",
    "StoreConfig",
    "TierFullError",
    "TierName",
    "TierStats",
    "TierStatsCollector",
    "TierUnavailableError",
    "TieredStore",
    "make_policy",
    "namespace_group",
]
