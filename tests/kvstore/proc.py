"""One engine process: answer one request over a configured store, print usage and stats as JSON.

Run as `python -m tests.kvstore.proc MODEL_DIR ORDER [--disk DIR] [--redis URL]`."""

from __future__ import annotations

import argparse
import dataclasses
import json

from tiergate.config import ModelsConfig
from tiergate.engine.generate import Engine, Finished, TextDelta
from tiergate.kvstore import KVConfig, KVStore
from tiergate.models import load_generator
from tiergate.tiers import StoreConfig, TieredStore

from .helpers import request


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("order")
    p.add_argument("--disk")
    p.add_argument("--redis")
    args = p.parse_args()
    cfg = StoreConfig(
        gpu={"enabled": False}, sweep_interval_s=0,
        disk={"enabled": bool(args.disk), "path": args.disk, "fsync": False},
        redis={"enabled": bool(args.redis), "url": args.redis or "redis://127.0.0.1:1/0", "timeout_s": 5.0},
    )
    gen = load_generator(ModelsConfig(generator=args.model_dir, device="cpu"), None)
    with TieredStore(cfg) as tiers:
        engine = Engine(gen, kv_store=KVStore(tiers, KVConfig()))
        events = list(engine.run(request([int(i) for i in args.order.split(",")], ratio=0.0)))
        assert isinstance(events[-1], Finished)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        print(json.dumps({"text": text, "usage": dataclasses.asdict(events[-1].usage),
                          "stats": engine.kv_store.stats.as_dict()}))


if __name__ == "__main__":
    main()
