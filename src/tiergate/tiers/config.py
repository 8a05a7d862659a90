"""Configuration of the tiered store. The top-level Settings embeds `StoreConfig` as `tiers`.

Budgets accept integers or strings such as "512MiB" / "4GiB".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuTierConfig(_Section):
    enabled: bool = Field(True, description="Use GPU memory for torch tensors; ignored when CUDA is unavailable.")
    budget_bytes: ByteSize = Field(ByteSize(2 << 30), description="GPU memory the tier may hold.")
    device: str = Field("cuda", description="torch device of the tier, e.g. 'cuda' or 'cuda:1'.")


class HostTierConfig(_Section):
    enabled: bool = Field(True, description="Keep objects in host RAM.")
    budget_bytes: ByteSize = Field(ByteSize(1 << 30), description="Host RAM the tier may hold.")
    pin_memory: bool | None = Field(
        None, description="Keep tensors in page-locked memory; None: when CUDA is available."
    )


class DiskTierConfig(_Section):
    enabled: bool = Field(True, description="Keep objects on local disk (active only once `path` is set).")
    path: Path | None = Field(None, description="Directory of the tier; Settings fills <data_dir>/tiers.")
    budget_bytes: ByteSize = Field(ByteSize(10 << 30), description="Disk space the tier may use.")
    write_through: bool = Field(
        True,
        description="Write every put to disk before it returns, so it survives a crash or restart. "
        "False: only objects demoted from memory reach disk (faster puts, not durable).",
    )
    fsync: bool = Field(True, description="fsync objects and the manifest before a put returns (survives power loss).")
    inline_max_bytes: ByteSize = Field(
        ByteSize(16 << 10),
        description="Objects up to this size (encoded) are written into the tier's manifest log rather than a "
        "file of their own: one append per put instead of a file to create, fsync and later remove.",
    )


class RedisTierConfig(_Section):
    enabled: bool = Field(False, description="Use Redis as a tier shared by all replicas.")
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis://, rediss://, unix://).")
    timeout_s: float = Field(0.25, gt=0, description="Socket connect/read timeout: the longest a call waits on Redis.")
    key_prefix: str = Field("tiergate:obj:", description="Prefix of every Redis key the store writes.")
    max_connections: int = Field(32, ge=1, description="Connection pool size.")
    retry_interval_s: float = Field(
        1.0, gt=0, description="After a failure, skip Redis this long before one probe call."
    )
    max_backoff_s: float = Field(30.0, gt=0, description="Upper bound of the doubling retry interval.")
    write_through: bool = Field(True, description="Copy every put to Redis so replicas share it.")
    max_object_bytes: ByteSize = Field(ByteSize(64 << 20), description="Larger objects are not written to Redis.")


class StoreConfig(_Section):
    """The tiered store: per-tier settings, eviction policy and housekeeping."""

    gpu: GpuTierConfig = Field(default_factory=GpuTierConfig, description="GPU memory tier.")
    host: HostTierConfig = Field(default_factory=HostTierConfig, description="Host RAM tier.")
    disk: DiskTierConfig = Field(default_factory=DiskTierConfig, description="Local disk tier.")
    redis: RedisTierConfig = Field(default_factory=RedisTierConfig, description="Shared Redis tier.")
    policy: Literal["lru", "gdsf"] = Field(
        "gdsf", description="Eviction policy of every local tier: 'lru' or cost-aware 'gdsf'."
    )
    promote_on_hit: bool = Field(True, description="Move objects found in a slower tier up on a hit.")
    default_ttl_s: float | None = Field(None, gt=0, description="TTL of objects put without one; None: no expiry.")
    sweep_interval_s: float = Field(
        30.0, ge=0, description="Period of the background expiry sweep; 0 disables the thread."
    )
    prefetch_workers: int = Field(2, ge=1, description="Threads serving prefetch().")
