"""What the dashboard's routes share, kept on `app.state.dashboard` by `install`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from tiergate.service.dashboard.config import DashboardConfig
from tiergate.service.dashboard.sampler import Sampler
from tiergate.service.dashboard.savings import Savings
from tiergate.service.dashboard.session import SessionSigner


@dataclass
class Dashboard:
    config: DashboardConfig
    sampler: Sampler
    savings: Savings
    signer: SessionSigner | None  # None without an admin key: no login, the admin API's rule applies


async def dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard
