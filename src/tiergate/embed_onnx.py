"""The embedder's forward pass in ONNX Runtime, for CPUs.

A short query through torch's eager BERT costs ~22 ms on a 2-core server CPU: dozens of separate
small GEMMs, each with its own dispatch and its own read of the weights. ONNX Runtime runs the
same graph, fused, in ~8 ms with the same vectors. The graph is exported once from the loaded
sentence-transformers model (a few seconds) and, given a cache folder, kept there under the
model's fingerprint so later starts only load it.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxEmbedding:
    """Features (numpy int64 arrays by input name) -> the model's sentence embeddings."""

    def __init__(self, graph: bytes | str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin after every call, taking a core from the event
        # loop and the other requests on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        # InferenceSession.run is safe to call from several threads at once.
        (out,) = self.session.run(None, {name: features[name] for name in self.inputs})
        return np.asarray(out, dtype=np.float32)


def load(model: Any, key: str, cache_dir: Path | None, threads: int) -> OnnxEmbedding:
    """The ONNX graph of a sentence-transformers `model`, exported or read from `cache_dir/key.onnx`."""
    return _cached(cache_dir, f"{key}.onnx", lambda: export(model), threads)


def load_int8(model: Any, key: str, cache_dir: Path | None, threads: int) -> OnnxEmbedding:
    """The graph of `load` with 8-bit weights, quantized or read from `cache_dir/key.int8.onnx`."""

    def make() -> bytes:
        fp32 = cache_dir / f"{key}.onnx" if cache_dir is not None else None
        return quantize(fp32.read_bytes() if fp32 is not None and fp32.is_file() else export(model))

    return _cached(cache_dir, f"{key}.int8.onnx", make, threads)


def _cached(cache_dir: Path | None, name: str, make: Callable[[], bytes], threads: int) -> OnnxEmbedding:
    path = cache_dir / name if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return OnnxEmbedding(str(path), threads)
        except Exception:  # a damaged file: made again below
            log.warning("embedder: cached ONNX graph %s unreadable; making it again", path, exc_info=True)
    graph = make()
    if path is not None:
        _save(graph, path)
    return OnnxEmbedding(graph, threads)


def _save(graph: bytes, path: Path) -> None:
    """Write atomically; a failed write (disk full, read-only) only costs an export next start."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".onnx-")
        with os.fdopen(fd, "wb") as f:
            f.write(graph)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("embedder: could not cache the ONNX graph at %s: %s", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def export(model: Any) -> bytes:
    import torch

    names = [n for n in _INPUTS if n in model.tokenizer.model_input_names]

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    # A padded example: tracing records one path through data-dependent branches (transformers
    # drops the attention mask when nothing is padded), and it must be the general one.
    ids = torch.ones((2, 8), dtype=torch.long, device=model.device)
    mask = ids.clone()
    mask[1, 5:] = 0
    example = tuple({"input_ids": ids, "attention_mask": mask}.get(n, torch.zeros_like(ids)) for n in names)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on branches fixed for all inputs of one model
        torch.onnx.export(
            Forward().eval(), example, buf, input_names=names, output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names}, opset_version=17, dynamo=False,
        )
    return buf.getvalue()


def quantize(graph: bytes) -> bytes:
    """Dynamic int8 quantization of the graph's matrix multiplies, one scale per output channel:
    a quarter of the weight bytes to read per query and VNNI integer kernels, at cosines within
    about 0.01 of the fp32 graph's vectors (a second or two, once)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="tiergate-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quiet = _DropMessage("Please consider to run pre-processing")  # its shape inference fails on BERT
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(onnx.load_from_string(graph), out, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(quiet)
        return out.read_bytes()


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
