"""Small real prompts for KV tests: a few short documents and a question (a few hundred tokens)."""

from __future__ import annotations

from tiergate.engine.generate import GenerationRequest
from tiergate.engine.prompt import Document
from tiergate.engine.sampling import SamplingParams
from tiergate.kvstore.config import KVOptions

DOCS = [
    "The Rhine is a river that begins in the Swiss Alps, flows through Germany and reaches the "
    "North Sea in the Netherlands. It is about 1,230 kilometres long and is one of the busiest "
    "waterways in Europe, carrying barges of coal, grain and containers between Basel and Rotterdam.",
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize, and the only person to win Nobel Prizes in two "
    "different sciences: physics in 1903 and chemistry in 1911. She was born in Warsaw in 1867.",
    "The Great Barrier Reef lies off the coast of Queensland, Australia. It is the world's largest "
    "coral reef system, made of about 2,900 individual reefs and 900 islands over 2,300 kilometres, "
    "and it can be seen from outer space. Warming seas have caused several mass bleaching events.",
    "Mount Kilimanjaro in Tanzania is the highest mountain in Africa, rising about 5,895 metres "
    "above sea level. It is a dormant volcano with three cones, Kibo, Mawenzi and Shira, and its "
    "glaciers have shrunk by more than eighty percent since the early twentieth century.",
]
SYSTEM = "Answer the question using the documents. Be brief."


def request(order: list[int], question: str = "Where was Marie Curie born?", *, ratio: float | None = None,
            max_tokens: int = 8, enabled: bool = True, **kv: object) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        documents=[Document(DOCS[i], id=f"d{i}") for i in order],
        kv=KVOptions(enabled=enabled, recompute_ratio=ratio, **kv),
    )
