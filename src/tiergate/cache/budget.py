"""Online error budgets: each category's threshold follows what verification measures.

A sampled share of would-be hits is also answered by the backend; misses whose best candidate
was just under the threshold ("probes") are compared with the fresh answer for free. Each
comparison is an observation (similarity, answers agreed). The threshold is the lowest one at
which the upper confidence bound of the false-hit rate among observations at or above it stays
within the category's budget; with too little evidence it never drops below the configured
start, and any false hit at or above the current threshold pushes it above that similarity.
This re-implements the idea of vCache (verified semantic caching) per category rather than
per embedding.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from tiergate.cache.config import BudgetConfig, CategoryConfig


@dataclass
class Observation:
    similarity: float
    agreed: bool


class ThresholdController:
    def __init__(self, category: CategoryConfig, budget: BudgetConfig, *, rng: random.Random | None = None):
        self.category = category
        self.budget = budget
        self.threshold = category.threshold
        self.observations: deque[Observation] = deque(maxlen=budget.window)
        self.changes = 0
        self.rng = rng or random.Random()

    @property
    def adaptive(self) -> bool:
        return self.category.target_false_hit_rate is not None

    def sample_rate(self) -> float:
        if not self.adaptive:
            return 0.0
        if len(self.observations) < self.budget.min_observations:
            return max(self.budget.sample_rate, self.budget.warmup_sample_rate)
        return self.budget.sample_rate

    def should_sample(self) -> bool:
        rate = self.sample_rate()
        return rate > 0 and self.rng.random() < rate

    def measured(self, at: float | None = None) -> tuple[int, int]:
        """(observations, disagreements) at or above `at` (default: the current threshold)."""
        t = self.threshold if at is None else at
        hits = [o for o in self.observations if o.similarity >= t]
        return len(hits), sum(1 for o in hits if not o.agreed)

    def record(self, similarity: float, agreed: bool) -> bool:
        """Add an observation; returns True when the threshold moved."""
        self.observations.append(Observation(similarity, agreed))
        if not self.adaptive:
            return False
        new = self._solve()
        if abs(new - self.threshold) < 1e-9:
            return False
        self.threshold = new
        self.changes += 1
        return True

    def _ucb(self, n: int, errors: int) -> float:
        """Wilson upper bound of a binomial rate."""
        if n == 0:
            return 1.0
        z = self.budget.confidence_z
        p = errors / n
        denom = 1 + z * z / n
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre + spread) / denom

    def _solve(self) -> float:
        cat = self.category
        target = cat.target_false_hit_rate or 0.0
        obs = sorted(self.observations, key=lambda o: o.similarity)
        # Candidate thresholds: the configured start and each observed similarity, within bounds.
        candidates = sorted({cat.threshold, *(o.similarity for o in obs)})
        candidates = [t for t in candidates if cat.min_threshold <= t <= cat.max_threshold]
        best = None
        for t in candidates:
            above = [o for o in obs if o.similarity >= t]
            errors = sum(1 for o in above if not o.agreed)
            enough = len(above) >= self.budget.min_observations
            if (enough and self._ucb(len(above), errors) <= target) or (
                not enough and errors == 0 and t >= cat.threshold
            ):
                best = t
                break
        if best is None:
            # No safe threshold found: sit just above the most similar disagreement.
            worst = max((o.similarity for o in obs if not o.agreed), default=cat.threshold)
            best = min(cat.max_threshold, max(cat.threshold, worst + 1e-3))
        return best
