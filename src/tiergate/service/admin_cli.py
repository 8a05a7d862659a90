"""`tiergate cache ...`: talks to a running gateway's admin API (the cache lives in its process)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import httpx
import typer

app = typer.Typer(help="Inspect and invalidate a running gateway's response cache.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option(help="Gateway base URL.", envvar="TIERGATE_URL")]
KeyOpt = Annotated[str | None, typer.Option(help="Admin key (default: $TIERGATE_ADMIN_KEY).")]


def _call(method: str, url: str, path: str, key: str | None, body: dict[str, Any] | None = None) -> Any:
    key = key or os.environ.get("TIERGATE_ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=30)
    except httpx.TransportError as exc:
        typer.secho(f"error: cannot reach the gateway at {url}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code >= 400:
        message = (data.get("error") or {}).get("message") or r.text
        typer.secho(f"error: {r.status_code}: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    return data


@app.command()
def stats(url: UrlOpt = "http://127.0.0.1:8080", admin_key: KeyOpt = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Hit, miss and false-hit counts per tenant and category; thresholds in force; entries and bytes."""
    data = _call("GET", url, "/admin/api/cache", admin_key)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"entries {data['entries']}  payload {data['payload_bytes']:,} B  index {data['index_bytes']:,} B")
    typer.echo(f"{'category':16} {'threshold':>9} {'entries':>8} {'budget':>7} {'observed':>9}")
    for name, c in data["categories"].items():
        budget = "-" if c["target_false_hit_rate"] is None else f"{c['target_false_hit_rate']:.1%}"
        state = f"{c['threshold']:.3f}" if c["enabled"] else "off"
        typer.echo(f"{name:16} {state:>9} {c['entries']:>8} {budget:>7} {c['observations']:>9}")
    for tenant, cats in data["tenants"].items():
        for cat, counts in cats.items():
            shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            typer.echo(f"  {tenant}/{cat}: {shown}")


@app.command()
def invalidate(
    url: UrlOpt = "http://127.0.0.1:8080", admin_key: KeyOpt = None,
    tenant: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    entry_id: Annotated[str | None, typer.Option("--entry")] = None,
    prompt_prefix: Annotated[str | None, typer.Option("--prefix")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Drop every entry.")] = False,
) -> None:
    """Drop matching entries on this replica and, through Redis, on every other."""
    body = {"tenant": tenant, "category": category, "model": model, "entry_id": entry_id,
            "prompt_prefix": prompt_prefix, "all": everything}
    data = _call("POST", url, "/admin/api/cache/invalidate", admin_key, {k: v for k, v in body.items() if v})
    typer.echo(f"invalidated {data['invalidated']} entries")
