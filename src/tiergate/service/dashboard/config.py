"""Settings of the admin dashboard; the top-level Settings embeds `DashboardConfig` as `dashboard`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DashboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve /admin and sample the dashboard's time series.")
    sample_interval_s: float = Field(5.0, ge=0.2, le=3600, description="Seconds between two samples.")
    history_points: int = Field(720, ge=10, le=100_000, description="Samples kept (720 x 5 s = one hour).")
    persist_every: int = Field(12, ge=1, description="Write the series to the data dir every this many samples.")
    session_ttl_s: float = Field(8 * 3600.0, gt=0, description="Lifetime of a dashboard login.")
    cost_per_1k_tokens: dict[str, float] = Field(
        default_factory=dict, description="Model name -> cost of 1,000 tokens, for the cost saved by cache hits.",
    )
    currency: str = Field("USD", max_length=8)
    max_tenants: int = Field(20, ge=1, le=1000, description="Tenants shown and exported by name; the rest add up "
                             "under 'other'.")
