"""Load or recompute: per chunk and tier, from measured bandwidth and prefill speed.

Loading a chunk saves computing its tokens in all but the recomputed share of the layers;
it costs its bytes over the tier's bandwidth. Both rates are running averages of what this
process measured (seeded with conservative guesses), so the choice follows the machine.
"""

from __future__ import annotations

import threading

# Seeds until measured: bytes/s per tier, and seconds per token-layer.
_SEED_BANDWIDTH = {"gpu": 500e9, "host": 20e9, "disk": 1.5e9, "redis": 0.5e9}
_SEED_LATENCY = {"gpu": 1e-5, "host": 2e-5, "disk": 2e-4, "redis": 5e-4}


class CostModel:
    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._lock = threading.Lock()
        self.bandwidth = dict(_SEED_BANDWIDTH)
        self.latency = dict(_SEED_LATENCY)
        self.token_layer_seconds: float | None = None  # unknown until a prefill ran

    def _ewma(self, old: float, new: float) -> float:
        return (1 - self.alpha) * old + self.alpha * new

    def observe_load(self, tier: str, nbytes: int, seconds: float) -> None:
        # Only sizeable loads say anything about bandwidth.
        if nbytes < (1 << 20) or seconds <= 0:
            return
        with self._lock:
            bw = self.bandwidth.get(tier, _SEED_BANDWIDTH["redis"])
            self.bandwidth[tier] = self._ewma(bw, nbytes / seconds)

    def observe_prefill(self, token_layers: float, seconds: float) -> None:
        if token_layers <= 0 or seconds <= 0:
            return
        rate = seconds / token_layers
        with self._lock:
            old = self.token_layer_seconds
            self.token_layer_seconds = rate if old is None else self._ewma(old, rate)

    def load_seconds(self, tier: str, nbytes: int) -> float:
        return self.latency.get(tier, 1e-3) + nbytes / self.bandwidth.get(tier, _SEED_BANDWIDTH["redis"])

    def saved_seconds(self, tokens: int, layers: int, computed_layers: float) -> float | None:
        """Compute avoided by reusing `tokens` whose KV would otherwise run in all `layers`."""
        if self.token_layer_seconds is None:
            return None
        return tokens * max(0.0, layers - computed_layers) * self.token_layer_seconds

    def should_load(self, tier: str, nbytes: int, tokens: int, layers: int, computed_layers: float) -> bool:
        saved = self.saved_seconds(tokens, layers, computed_layers)
        if saved is None:
            return True  # nothing measured yet: optimistic, and the first prefill calibrates
        return self.load_seconds(tier, nbytes) < saved
