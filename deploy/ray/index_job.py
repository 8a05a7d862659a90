"""Build a tiergate index over a large corpus on a Ray cluster.

Chunking and embedding run as a Ray Data job (Parquet in, Parquet out) across the cluster's
CPUs or GPUs; the graph and PQ codes are built where the embeddings land, and the finished index
appears atomically in the gateway's data directory (shared storage).

    ray job submit --address http://RAY_HEAD:8265 --working-dir . \
        --runtime-env deploy/ray/runtime_env.yaml -- \
        python deploy/ray/index_job.py /data/corpus.parquet --name docs --data-dir /shared/tiergate
"""

from __future__ import annotations

import argparse
import json

from tiergate.config import load_settings
from tiergate.index import build_index
from tiergate.index.build import BuildParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="JSONL, Parquet, CSV files or folders of .txt/.md")
    parser.add_argument("--name", required=True)
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--data-dir", required=True, help="the gateway's data directory (shared storage)")
    parser.add_argument("--chunk-tokens", type=int, default=0, help="0: one record, one passage")
    parser.add_argument("--overlap", type=int, default=0)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    info = build_index(settings, args.name, args.sources, tenant=args.tenant, progress=True, ray_address="auto",
                       params=BuildParams(chunk_tokens=args.chunk_tokens, overlap=args.overlap))
    print(json.dumps(info.to_dict(), default=str))


if __name__ == "__main__":
    main()
