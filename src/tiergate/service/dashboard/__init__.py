"""The admin dashboard: `/admin` pages, `/admin/api/{overview,series,actions/...}`, a sampled time
series of its numbers, and Prometheus collectors for them. `install.install(app, svc)` wires it.

This package's `__init__` stays light: `tiergate.config` imports `DashboardConfig` from here.
"""
