"""Incremental detokenisation with stop strings.

Tokens are decoded as a whole each step (exact for any tokenizer) and only text that can no
longer change is released: nothing ending in an incomplete UTF-8 sequence, and nothing that
could still turn out to be the start of a stop string.
"""

from __future__ import annotations

from typing import Any


class StreamDecoder:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the newly released text (possibly empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        self.text = text
        for s in self.stop:
            at = text.find(s, max(0, self.emitted - len(s) + 1))
            if at != -1:
                self.stopped = True
                self.text = text[:at]
                return self._release(len(self.text))
        return self._release(len(text) - self._held_back(text))

    def flush(self) -> str:
        """Release everything left (the generation ended without a stop string)."""
        return self._release(len(self.text))

    def _held_back(self, text: str) -> int:
        # The longest suffix of `text` that is a proper prefix of some stop string.
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out
