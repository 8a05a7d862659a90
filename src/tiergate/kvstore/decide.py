"""Load or recompute: per chunk and tier, from measured bandwidth and prefill speed.

Loading a chunk saves computing its tokens in all but the recomputed share of the layers;
it costs its bytes over the tier's bandwidth. Both rates are running averages of what this
process measured (seeded with conservative guesses), so the choice follows the machine.

A blend also costs what the computed tokens do not show: placing and rotating every prompt
token's KV in every layer, gathers and scatters, kernel launches (a small model on a GPU can
blend slower than it prefills). That overhead per prompt token-layer is measured too, and a
request blends only while it is predicted to beat a full prefill. Every `EXPLORE_EVERY`-th
request that could blend does, to keep the measurement current.
"""

from __future__ import annotations

import threading

# Seeds until measured: bytes/s per tier, and seconds per token-layer.
_SEED_BANDWIDTH = {"gpu": 500e9, "host": 20e9, "disk": 1.5e9, "redis": 0.5e9}
_SEED_LATENCY = {"gpu": 1e-5, "host": 2e-5, "disk": 2e-4, "redis": 5e-4}
EXPLORE_EVERY = 16


class CostModel:
    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._lock = threading.Lock()
        self.bandwidth = dict(_SEED_BANDWIDTH)
        self.latency = dict(_SEED_LATENCY)
        self.token_layer_seconds: float | None = None  # unknown until a prefill ran
        self.blend_overhead_seconds: float | None = None  # per prompt token-layer, in blends
        self._blend_asks = 0

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

    def observe_blend(self, token_layers: float, prompt_token_layers: float, seconds: float) -> None:
        """A blend that computed `token_layers` for a prompt of `prompt_token_layers` took `seconds`."""
        with self._lock:
            rate = self.token_layer_seconds
            if rate is None or prompt_token_layers <= 0:
                return
            overhead = max(0.0, seconds - rate * token_layers) / prompt_token_layers
            old = self.blend_overhead_seconds
            self.blend_overhead_seconds = overhead if old is None else self._ewma(old, overhead)

    def blend_pays(self, full_token_layers: float, blend_token_layers: float, prompt_token_layers: float) -> bool:
        """Whether a blend computing `blend_token_layers` beats a full prefill computing
        `full_token_layers`, for a prompt of `prompt_token_layers`."""
        with self._lock:
            self._blend_asks += 1
            rate, overhead = self.token_layer_seconds, self.blend_overhead_seconds
            if rate is None or overhead is None or self._blend_asks % EXPLORE_EVERY == 0:
                return True
        return rate * blend_token_layers + overhead * prompt_token_layers < rate * full_token_layers

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
