"""tiergate: a gateway that makes retrieval-augmented LLM serving cheap."""

__version__ = "0.1.0"
