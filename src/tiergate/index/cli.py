"""`tiergate index ...`: build, search, info, list, delete, insert, remove (admin: any tenant)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tiergate.errors import TiergateError

app = typer.Typer(help="Build and query low-storage ANN indexes.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="TIERGATE_CONFIG", help="YAML settings file.")]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant owning the index.")]


def _settings(config: Path | None):
    from tiergate.config import load_settings

    return load_settings(config)


def _fail(exc: TiergateError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


@app.command()
def build(
    sources: Annotated[list[Path], typer.Argument(help="JSONL, Parquet, CSV files or folders of .txt/.md.")],
    name: Annotated[str, typer.Option("--name", help="Index name.")],
    chunk_tokens: Annotated[int, typer.Option(help="Tokens per chunk; 0 = one record, one passage.")] = 0,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks.")] = 0,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Run chunking + embedding on Ray: 'local' or ADDRESS.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index of that name.")] = False,
    tenant: TenantOpt = "default",
    config: ConfigOpt = None,
) -> None:
    """Build an index from sources."""
    from tiergate.index.build import BuildParams, build_index
    from tiergate.index.store import index_info

    try:
        settings = _settings(config)
        params = BuildParams(chunk_tokens=chunk_tokens, overlap=overlap)
        build_index(settings, name, sources, tenant=tenant, params=params, progress=True, ray_address=ray,
                    overwrite=overwrite)
        info = index_info(settings, name, tenant)
    except TiergateError as exc:
        _fail(exc)
    typer.echo(f"built {name}: {info.passages} passages, index {info.index_bytes} bytes "
               f"({100 * info.index_ratio:.2f}% of {info.raw_text_bytes} text bytes)")


@app.command()
def search(
    name: str,
    query: Annotated[str | None, typer.Argument(help="Query text (or use --queries).")] = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="File with one query per line ('-' = stdin).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (JSON lines with --queries).")] = False,
    ef: Annotated[int | None, typer.Option(help="Traversal pool size.")] = None,
    recompute: Annotated[int | None, typer.Option(help="Most exact re-scorings per query.")] = None,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="FIELD=VALUE metadata equality.")] = None,
    tenant: TenantOpt = "default",
    config: ConfigOpt = None,
) -> None:
    """Search an index with one query or a file of queries (the model loads once)."""
    from tiergate.index.store import open_index

    if (query is None) == (queries is None):
        typer.echo("error: give either QUERY or --queries FILE", err=True)
        raise typer.Exit(2)
    filters = {}
    for f in filter_ or []:
        key, sep, value = f.partition("=")
        if not sep:
            typer.echo(f"error: --filter {f!r} must be FIELD=VALUE", err=True)
            raise typer.Exit(2)
        try:
            filters[key] = json.loads(value)
        except json.JSONDecodeError:
            filters[key] = value
    try:
        index = open_index(_settings(config), name, tenant)
        if query is not None:
            qs = [query]
        else:
            stream = sys.stdin if str(queries) == "-" else queries.open(encoding="utf-8")
            qs = [line.strip() for line in stream if line.strip()]
        out = []
        for i in range(0, len(qs), 64):
            batch = qs[i : i + 64]
            out.extend(zip(batch, index.search_batch(batch, k, ef=ef, recompute=recompute, filters=filters or None),
                           strict=True))
    except TiergateError as exc:
        _fail(exc)
    for q, hits in out:
        if as_json:
            typer.echo(json.dumps({"query": q, "results": [h.to_dict() for h in hits]}, ensure_ascii=False))
        else:
            typer.echo(f"# {q}")
            for rank, h in enumerate(hits, 1):
                snippet = " ".join(h.text.split())[:100]
                typer.echo(f"{rank:3d}. {h.score:.4f}  {h.id}  {snippet}")


@app.command()
def info(name: str, as_json: Annotated[bool, typer.Option("--json")] = False, tenant: TenantOpt = "default",
         config: ConfigOpt = None) -> None:
    """Sizes, counts and parameters of an index."""
    from tiergate.index.store import index_info

    try:
        i = index_info(_settings(config), name, tenant)
    except TiergateError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(i.to_dict(), indent=1))
        return
    typer.echo(f"{i.tenant}/{i.name} ({i.version}): {i.passages} passages, {i.deleted} deleted, model {i.model_id}")
    typer.echo(f"raw text {i.raw_text_bytes} B, text store {i.text_store_bytes} B, index {i.index_bytes} B "
               f"({100 * i.index_ratio:.2f}% of raw text, {i.index_bytes / max(1, i.passages):.1f} B/passage)")
    for f, b in i.files.items():
        typer.echo(f"  {f:24s} {b:>12d}")


@app.command("list")
def list_(tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: all).")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None) -> None:
    """List indexes."""
    from tiergate.index.store import list_indexes

    try:
        infos = list_indexes(_settings(config), tenant)
    except TiergateError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=1))
        return
    for i in infos:
        typer.echo(f"{i.tenant}/{i.name}\t{i.passages} passages\t{i.index_bytes} B index\t{i.model_id}")


@app.command()
def delete(name: str, tenant: TenantOpt = "default", config: ConfigOpt = None) -> None:
    """Delete an index."""
    from tiergate.index.store import delete_index

    try:
        delete_index(_settings(config), name, tenant)
    except TiergateError as exc:
        _fail(exc)
    typer.echo(f"deleted {tenant}/{name}")


@app.command()
def insert(name: str, sources: list[Path], tenant: TenantOpt = "default", config: ConfigOpt = None) -> None:
    """Insert (or replace, by id) passages in an existing index."""
    from tiergate.index.updates import insert_documents

    try:
        r = insert_documents(_settings(config), name, sources, tenant=tenant)
    except TiergateError as exc:
        _fail(exc)
    typer.echo(f"inserted {r.inserted}, replaced {r.deleted}; {r.passages} passages ({r.version})")


@app.command()
def remove(name: str, ids: list[str], tenant: TenantOpt = "default", config: ConfigOpt = None) -> None:
    """Delete passages (by passage id or record id) from an index."""
    from tiergate.index.updates import delete_documents

    try:
        r = delete_documents(_settings(config), name, ids, tenant=tenant)
    except TiergateError as exc:
        _fail(exc)
    typer.echo(f"deleted {r.deleted}; {r.passages} passages ({r.version})"
               + (f"; not found: {', '.join(r.missing)}" if r.missing else ""))
