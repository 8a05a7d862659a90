"""Faults at the gateway level, with real parts: Redis SIGKILLed and restarted under load, the
gateway SIGKILLed during cache writes and an index build, a full disk, corrupt files in the data
dir. Every test drives the real gateway over HTTP against a real upstream on loopback.

Durability contract these tests hold the gateway to: a fresh answer is stored in the cache before
the client gets its last byte, and with the disk tier's write-through (the default) each store
`put` is on disk (written, fsynced, committed in the manifest) before it returns. So every answer a
client received as a miss is on disk, and survives SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from tests.service.conftest import run_gateway, upstream_settings
from tests.service.faultproc import GatewayProcess, fill, flip_byte, object_files, tmpfs
from tests.upstream_server import Behaviour, UpstreamServer, reply_text
from tiergate.cache.entries import decode_meta
from tiergate.config import load_settings
from tiergate.index.catalog import remove_leftovers
from tiergate.tiers import StoreConfig, TieredStore
from tiergate.tiers.disk import DiskTier, record_meta

WORDS = 40  # the upstream echoes the whole prompt: each prompt has its own answer
NO_SAMPLING = {"sample_rate": 0, "warmup_sample_rate": 0}  # a sampled would-be hit is served as a miss


def expected(prompt: str) -> str:
    return reply_text({"messages": [{"role": "user", "content": prompt}]}, WORDS)


def prompt(i: int) -> str:
    # numbers the guard tells apart, so a new prompt never takes another one's answer
    return f"What is {i} plus {3 * i + 11}?"


def ask(client: httpx.Client, url: str, text: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
    # the category is given: left to the classifier, some of these prompts tie with "personal" (never cached)
    return client.post(url + "/v1/chat/completions", json=body, headers={"X-Tiergate-Category": "math"}, timeout=30)


def content(r: httpx.Response) -> str:
    return r.json()["choices"][0]["message"]["content"]


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus series' samples whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    server = UpstreamServer(behaviour=Behaviour(words=WORDS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedder():
    from tiergate.config import ModelsConfig
    from tiergate.models import load_embedder

    return load_embedder(ModelsConfig())


@pytest.fixture
def shared_embedder(embedder, monkeypatch):
    """In-thread gateways share one loaded embedder: the model each would load, loaded once."""
    monkeypatch.setattr("tiergate.service.embeddings.load_embedder", lambda config, cache_dir=None: embedder)


@pytest.fixture(autouse=True)
def open_admin(monkeypatch):
    monkeypatch.delenv("TIERGATE_ADMIN_KEY", raising=False)  # open loopback mode: admin routes need no key


def backend(up: UpstreamServer) -> dict[str, Any]:
    return {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["m"], "read_timeout_s": 10}


# ------------------------------------------------------------------ 1. Redis killed under load


@dataclass
class Load:
    """A steady stream of chat requests from a few threads: repeats of answered prompts (hits)
    and new prompts (misses). Records every outcome with the phase it happened in."""

    url: str
    phase: str = "up"
    answered: dict[str, str] = field(default_factory=dict)  # prompt -> answer received as a miss
    outcomes: list[tuple[str, str, int, str, bool]] = field(default_factory=list)  # phase, prompt, status, cache, ok
    counter: Iterator[int] = field(default_factory=itertools.count)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, workers: int = 3) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._work, args=(random.Random(i),), daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        return threads

    def _work(self, rng: random.Random) -> None:
        with httpx.Client() as client:
            while not self.stop.is_set():
                with self.lock:
                    known = list(self.answered)
                    phase = self.phase
                text = rng.choice(known) if known and rng.random() < 0.6 else prompt(next(self.counter))
                try:
                    r = ask(client, self.url, text)
                    status, cache = r.status_code, r.headers.get("x-tiergate-cache", "")
                    ok = status == 200 and content(r) == expected(text)
                except httpx.HTTPError as exc:  # recorded as a failure, like any other
                    status, cache, ok = 0, repr(exc), False
                with self.lock:
                    self.outcomes.append((phase, text, status, cache, ok))
                    if ok and cache == "miss":
                        self.answered.setdefault(text, expected(text))

    def count(self, phase: str, cache: str | None = None) -> int:
        with self.lock:
            return sum(1 for p, _, _, c, _ in self.outcomes if p == phase and (cache is None or c == cache))


def wait_until(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow  # real embedder
def test_redis_killed_and_restarted_mid_load(tmp_path: Path, up: UpstreamServer, redis_process, shared_embedder):
    def settings(name: str):
        return upstream_settings(
            tmp_path / name, backend(up),
            cache={"enabled": True, "budget": NO_SAMPLING},
            tiers={"gpu": {"enabled": False},
                   "redis": {"enabled": True, "url": redis_process.url, "retry_interval_s": 0.2,
                             "max_backoff_s": 1.0}},
        )

    client = redis.Redis.from_url(redis_process.url)
    with run_gateway(settings("a")) as a, run_gateway(settings("b")) as b:
        load = Load(a)
        threads = load.run()
        try:
            wait_until(lambda: len(load.answered) >= 10 and load.count("up", "exact") >= 5, what="a warm cache")
            assert client.dbsize() > 0  # the shared tier is written through
            redis_process.proc.kill()  # SIGKILL: no shutdown, connections reset
            redis_process.proc.wait()
            redis_process.proc = None
            with load.lock:
                load.phase = "down"
                before_kill = dict(load.answered)
            wait_until(lambda: load.count("down", "exact") >= 10 and load.count("down", "miss") >= 3,
                       what="hits and misses while Redis is down")
            assert metric(a, "tiergate_tier_redis_up") == 0  # the gateway noticed, and kept answering
            redis_process.start()  # empty: no persistence
            with load.lock:
                load.phase = "restarted"
            wait_until(lambda: metric(a, "tiergate_tier_redis_up") == 1 and metric(b, "tiergate_tier_redis_up") == 1
                       and load.count("restarted") >= 5, what="the Redis tier to come back")
        finally:
            load.stop.set()
            for t in threads:
                t.join(30)

        bad = [o for o in load.outcomes if o[2] != 200 or not o[4]]
        assert not bad, bad[:5]
        down_hits = [o for o in load.outcomes if o[0] == "down" and o[3] == "exact"]
        assert any(o[1] in before_kill for o in down_hits)  # entries from before the kill, served locally
        assert load.count("down", "miss") >= 3  # new answers were stored locally too ...
        stored_while_down = {o[1] for o in load.outcomes if o[0] == "down" and o[3] == "miss"}
        with httpx.Client() as c:
            assert all(ask(c, a, p).headers["x-tiergate-cache"] == "exact" for p in stored_while_down)  # ... and hit

            # The shared tier resumes: replica B, subscribed again, indexes what A stores now and
            # serves it from Redis without calling the upstream.
            wait_until(lambda: client.pubsub_numsub("tiergate:cache:events")[0][1] == 2, 30,
                       "both replicas to resubscribe")
            b_entries = httpx.get(b + "/admin/api/cache").json()["entries"]
            fresh = "What is 9001 plus 27014?"
            r = ask(c, a, fresh)
            assert r.status_code == 200 and r.headers["x-tiergate-cache"] == "miss"
            assert any(k.startswith(b"tiergate:obj:cache/") for k in client.scan_iter(count=1000))
            wait_until(lambda: httpx.get(b + "/admin/api/cache").json()["entries"] == b_entries + 1, 30,
                       "replica B to index A's new entry")
            calls = up.requests
            r = ask(c, b, fresh)
            assert r.status_code == 200 and r.headers["x-tiergate-cache"] == "exact"
            assert content(r) == expected(fresh) and up.requests == calls


# ------------------------------------------------------------------ 2. gateway SIGKILLed mid-write

FACTS = [
    ("everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("python", "Python is a high-level programming language created by Guido van Rossum."),
    ("nile", "The Nile is a major north-flowing river in northeastern Africa."),
    ("photosynthesis", "Photosynthesis lets plants turn light, water and carbon dioxide into sugar."),
] + [(f"filler-{i}", f"Filler passage number {i} about topic {i % 7} and item {i}.") for i in range(24)]
SMALL = [{"id": i, "text": t} for i, t in FACTS]
# Long enough that a build is still embedding when the process dies (256 passages per block).
BIG = [{"id": f"big-{i}", "text": f"Passage {i} of a long corpus: item {i} belongs to group {i % 13}, "
        f"shelf {i % 29} and row {i % 31}, and is filed under letter {chr(65 + i % 26)}."} for i in range(4000)]


def start_build(url: str, name: str, documents: list[dict]) -> str:
    r = httpx.post(f"{url}/v1/indexes", json={"name": name, "documents": documents}, timeout=60)
    assert r.status_code == 202, r.text
    return r.json()["job"]["id"]


def job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/indexes/jobs/{job_id}").json()


def wait_job(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while (state := job(url, job_id))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


def search(url: str, name: str, query: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/indexes/{name}/search", json={"query": query, "k": 3}, timeout=60)


def hidden_leftovers(data_dir: Path) -> list[str]:
    tenant = data_dir / "indexes" / "default"
    return sorted(p.name for p in tenant.iterdir() if p.name.startswith(".")) if tenant.is_dir() else []


class Writers:
    """Threads storing fresh answers until the gateway dies; keeps what each client was sent."""

    def __init__(self, url: str, first: int) -> None:
        self.url = url
        self.counter = itertools.count(first)
        self.sent: list[str] = []
        self.acknowledged: dict[str, str] = {}
        self.failed: list[str] = []  # answers other than 200, while the gateway was up
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(4)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        with httpx.Client() as client:
            while True:
                with self.lock:
                    text = prompt(next(self.counter))
                    self.sent.append(text)
                try:
                    r = ask(client, self.url, text)
                except httpx.TransportError:
                    return  # the gateway is gone
                with self.lock:
                    if r.status_code != 200:
                        self.failed.append(r.text)
                    elif r.headers["x-tiergate-cache"] == "miss":
                        self.acknowledged[text] = content(r)

    def join(self) -> None:
        for t in self.threads:
            t.join(30)


@pytest.mark.slow  # real embedder
def test_gateway_sigkilled_during_writes_and_index_build(tmp_path: Path, up: UpstreamServer):
    data_dir = tmp_path / "var"
    config = {"data_dir": str(data_dir), "backends": [backend(up)], "cache": {"enabled": True, "budget": NO_SAMPLING},
              # the defaults, spelled out: they make an acknowledged answer durable
              "tiers": {"gpu": {"enabled": False}, "disk": {"write_through": True, "fsync": True}}}
    gw = GatewayProcess(config, tmp_path).start()
    try:
        assert wait_job(gw.url, start_build(gw.url, "kept", SMALL))["state"] == "done"
        kept_hits = search(gw.url, "kept", "the highest mountain").json()["data"]
        writers = Writers(gw.url, first=0)
        wait_until(lambda: len(writers.acknowledged) >= 20, 120, "acknowledged cache writes")
        half = start_build(gw.url, "half", BIG)  # the writers go on while it runs
        wait_until(lambda: job(gw.url, half)["done"] >= 256, 120, "the build to be half way")
        assert job(gw.url, half)["state"] == "running"
        assert remove_leftovers(load_settings(data_dir=data_dir)) == []  # a live build's folder stays
        gw.kill()  # mid-build, with cache writes in flight
        writers.join()
    finally:
        gw.kill()
    assert writers.failed == []

    gw = gw.restarted()
    try:
        with httpx.Client() as client:
            calls = up.requests
            for text, answer in writers.acknowledged.items():  # every acknowledged entry is a hit
                r = ask(client, gw.url, text)
                assert (r.status_code, r.headers["x-tiergate-cache"], content(r)) == (200, "exact", answer), text
            assert up.requests == calls
            for text in writers.sent:  # whatever was in flight: served right, or asked again
                r = ask(client, gw.url, text)
                assert r.status_code == 200 and content(r) == expected(text)

        # The half-built index was never published: it does not exist, and its name is free.
        assert httpx.get(f"{gw.url}/v1/indexes/half").status_code == 404
        assert search(gw.url, "half", "passage").status_code == 404
        assert [i["name"] for i in httpx.get(f"{gw.url}/v1/indexes").json()["data"]] == ["kept"]
        assert search(gw.url, "kept", "the highest mountain").json()["data"] == kept_hits
        assert hidden_leftovers(data_dir) == []  # the dead build's staging folder was cleaned up
        assert wait_job(gw.url, start_build(gw.url, "half", SMALL))["state"] == "done"
        assert search(gw.url, "half", "who created Python").json()["data"][0]["id"] == "python"
    finally:
        gw.kill()


# ------------------------------------------------------------------ 3. disk full


def committed_objects_read_back(tier_dir: Path) -> int:
    """Open a disk tier directory as a restart would and read every committed object: each file
    must pass its checksums (one whose delete the full disk could not log is gone: a miss, not
    damage). Returns how many were read."""
    disk = DiskTier(tier_dir, 1 << 30)
    read = 0
    try:
        for r in disk.open():
            with contextlib.suppress(FileNotFoundError):
                disk.read(record_meta(r), r[9], r[10])  # raises CorruptObjectError on a bad byte
                read += 1
    finally:
        disk.close()
    return read


@pytest.mark.slow  # real embedder
def test_disk_full(tmp_path: Path, up: UpstreamServer, caplog, shared_embedder):
    with tmpfs(tmp_path / "data", "2m") as data_dir:
        settings = upstream_settings(data_dir, backend(up), cache={"enabled": True, "budget": NO_SAMPLING},
                                     tiers={"gpu": {"enabled": False}})
        with run_gateway(settings) as url, httpx.Client() as c:
            stored = {}
            for i in range(8):
                r = ask(c, url, prompt(1000 + i))
                assert r.headers["x-tiergate-cache"] == "miss"
                stored[prompt(1000 + i)] = content(r)
            assert wait_job(url, start_build(url, "before", SMALL))["state"] == "done"

            ballast = fill(data_dir)
            errors = metric(url, "tiergate_tier_errors_total", tier="disk")
            for i in range(5):  # the tier makes room by giving up its own oldest files
                text = prompt(2000 + i)
                r = ask(c, url, text)
                assert r.status_code == 200 and content(r) == expected(text)
            # An answer larger than all the tier's own files cannot be stored: the client gets it anyway.
            big = " ".join(f"{i}{'x' * 5000}" for i in range(WORDS))
            r = ask(c, url, big)
            assert r.status_code == 200 and content(r) == expected(big)
            assert ask(c, url, big).headers["x-tiergate-cache"] == "miss"  # not stored: the write failed
            assert metric(url, "tiergate_tier_errors_total", tier="disk") > errors  # counted ...
            assert "no space left on the device" in caplog.text  # ... and logged
            for text, answer in stored.items():  # what was stored before is served unchanged
                r = ask(c, url, text)
                assert (r.status_code, r.headers["x-tiergate-cache"], content(r)) == (200, "exact", answer)
            assert search(url, "before", "the highest mountain").json()["data"][0]["id"] == "everest"

            ballast_too = fill(data_dir, "ballast-too")  # what the tier gave up is taken too
            failed = wait_job(url, start_build(url, "full", SMALL))
            assert failed["state"] == "failed", failed
            assert failed["error"] == "not enough disk space to build index 'full' (No space left on device)"
            assert "index build default/full failed" in caplog.text
            assert httpx.get(f"{url}/v1/indexes/full").status_code == 404
            assert hidden_leftovers(data_dir) == [] and not (data_dir / "indexes" / "default" / "full").exists()
            assert httpx.get(url + "/healthz").status_code == 200

            ballast.unlink()  # space again: writes succeed again
            ballast_too.unlink()
            text = prompt(3000)
            assert ask(c, url, text).headers["x-tiergate-cache"] == "miss"
            assert ask(c, url, text).headers["x-tiergate-cache"] == "exact"
            assert wait_job(url, start_build(url, "full", SMALL))["state"] == "done"
        assert committed_objects_read_back(data_dir / "tiers") > 0


def test_deletes_the_full_disk_cannot_log_stay_deleted(tmp_path: Path):
    """When the manifest cannot take a delete record (the device is full), the object must not
    come back after a restart. `clear` logs every delete before it unlinks a file, so once the
    manifest's last page is full the remaining deletes cannot be logged."""
    with tmpfs(tmp_path / "disk", "2m") as folder:
        config = StoreConfig(gpu={"enabled": False}, disk={"path": folder / "tiers"}, sweep_interval_s=0)
        keys = [f"key-{i}" for i in range(300)]  # ~6 KiB of delete records, more than a page
        with TieredStore(config) as store:
            for k in keys:
                store.put("ns", k, k.encode())
            ballast = fill(folder)
            store.clear("ns")
        ballast.unlink()
        with TieredStore(config) as store:
            assert [k for k in keys if store.get("ns", k) is not None] == []


# ------------------------------------------------------------------ 4. corrupt files in the data dir


def cache_files(tier_dir: Path) -> dict[str, dict[str, tuple[Path, int]]]:
    """prompt -> {"p": (file, payload offset), "m": ...} for every cache entry in a disk tier directory."""
    by_id: dict[str, dict[str, tuple[Path, int]]] = {}
    queries: dict[str, str] = {}
    for path, header, offset in object_files(tier_dir):
        kind, _, entry_id = header.key.partition("/")
        if kind in ("p", "m") and header.namespace.startswith("cache/"):
            by_id.setdefault(entry_id, {})[kind] = (path, offset)
            if kind == "m":
                queries[entry_id] = decode_meta(int(entry_id, 16), path.read_bytes()[offset:])[0].query
    return {queries[i]: files for i, files in by_id.items() if i in queries}


def silent_flip(segment: Path) -> int:
    """An offset in a text segment where a flipped byte still decodes, to different passages:
    only page checksums can tell (the size is unchanged, and Parquet's structure is intact)."""
    data = segment.read_bytes()
    column = pq.ParquetFile(segment).metadata.row_group(0).column(2)  # the passages' text
    start = column.dictionary_page_offset or column.data_page_offset
    original = pq.read_table(segment, columns=["text"]).column(0).to_pylist()
    for offset in range(start, start + column.total_compressed_size):
        damaged = bytearray(data)
        damaged[offset] ^= 0x20
        try:
            texts = pq.read_table(pa.BufferReader(bytes(damaged)), columns=["text"]).column(0).to_pylist()
        except Exception:
            continue  # this one Parquet notices by itself
        if texts != original:
            return offset
    pytest.fail("no byte of the text column changes the passages silently")


@pytest.mark.slow  # real embedder
def test_corrupt_files_in_the_data_dir(tmp_path: Path, up: UpstreamServer, caplog, shared_embedder):
    data_dir = tmp_path / "var"
    # Entries in files of their own, to damage them one by one (tests/tiers/test_inline.py
    # damages objects kept in the manifest).
    settings = upstream_settings(data_dir, backend(up), cache={"enabled": True, "budget": NO_SAMPLING},
                                 tiers={"gpu": {"enabled": False}, "disk": {"inline_max_bytes": 0}})
    prompts = [prompt(5000 + i) for i in range(6)]
    with run_gateway(settings) as url, httpx.Client() as c:
        answers = {p: content(ask(c, url, p)) for p in prompts}
        for name in ("good", "flipped", "truncated", "garbled"):
            assert wait_job(url, start_build(url, name, SMALL))["state"] == "done"

    files = cache_files(settings.tiers.disk.path)
    assert set(files) == set(prompts)
    path, offset = files[prompts[0]]["p"]
    answer_at = path.read_bytes().index(b"plus", offset)
    flip_byte(path, answer_at)  # inside the answer: "plus" would read "pLus"
    path, _ = files[prompts[1]]["p"]
    path.write_bytes(path.read_bytes()[:-5])  # truncated payload
    path, offset = files[prompts[2]]["m"]
    flip_byte(path, offset + 20)  # inside the entry's metadata
    files[prompts[3]]["p"][0].unlink()  # a payload file gone
    with (settings.tiers.disk.path / "manifest.log").open("ab") as f:
        f.write(b"\x17\x00\x00\x00garbage")  # a torn record at the manifest's end
    version = data_dir / "indexes" / "default" / "flipped" / "v000001"
    flip_byte(version / "graph_edges.npy", (version / "graph_edges.npy").stat().st_size - 3)
    version = data_dir / "indexes" / "default" / "truncated" / "v000001"
    text = version / "text-00000.parquet"
    text.write_bytes(text.read_bytes()[: text.stat().st_size // 2])
    text = data_dir / "indexes" / "default" / "garbled" / "v000001" / "text-00000.parquet"
    flip_byte(text, silent_flip(text))

    caplog.clear()
    calls = up.requests
    with run_gateway(settings) as url, httpx.Client() as c:  # starts on the damaged data dir
        for text in prompts[:4]:  # damaged entries are misses, answered afresh, never served corrupt
            r = ask(c, url, text)
            assert (r.status_code, r.headers["x-tiergate-cache"], content(r)) == (200, "miss", expected(text))
            assert ask(c, url, text).headers["x-tiergate-cache"] == "exact"  # and stored again
        for text in prompts[4:]:  # the good ones are kept
            r = ask(c, url, text)
            assert (r.status_code, r.headers["x-tiergate-cache"], content(r)) == (200, "exact", answers[text])
        assert up.requests == calls + 4
        for report in ("torn manifest tail", "unreadable", "missing"):  # each kind of damage is logged
            assert report in caplog.text

        assert search(url, "good", "the highest mountain").json()["data"][0]["id"] == "everest"
        for name, why in (("flipped", "graph_edges.npy: checksum mismatch"), ("truncated", "text-00000.parquet"),
                          ("garbled", "text-00000.parquet")):
            r = search(url, name, "the highest mountain")
            assert r.status_code == 409, (name, r.text)  # never hits from a damaged file
            error = r.json()["error"]
            assert error["code"] == "index_corrupt" and why in error["message"], r.text
            assert str(data_dir) not in error["message"]  # names the file, not the server's paths
            body = {"model": "m", "messages": [{"role": "user", "content": "Who created Python?"}],
                    "retrieval": {"index": name, "k": 2}}
            r = c.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 409 and r.json()["error"]["code"] == "index_corrupt"
        r = httpx.get(f"{url}/v1/indexes/truncated")  # its info, too, says what is wrong
        assert r.status_code == 409 and "text-00000.parquet" in r.text and str(data_dir) not in r.text
        assert httpx.delete(f"{url}/v1/indexes/flipped").status_code == 200  # a corrupt index can be replaced
        assert wait_job(url, start_build(url, "flipped", SMALL))["state"] == "done"
        assert search(url, "flipped", "who created Python").json()["data"][0]["id"] == "python"
        assert httpx.get(url + "/readyz").status_code == 200
