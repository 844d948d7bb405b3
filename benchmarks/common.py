"""Timing helpers: interleaved repetitions, medians, ratios, the benchmark model shapes."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int = 7, number: int = 20,
                warmup: int = 3, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each candidate, the candidates alternating inside every repetition.

    ``clock=time.thread_time`` counts only this thread's CPU time (what other processes on a shared machine
    do to the wall clock is left out); pair it with :func:`one_thread`, so that the whole kernel runs here.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = clock()
            for _ in range(number):
                fn()
            samples[name].append((clock() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 inside (thread time then measures the whole kernel), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ratio(times: dict[str, float], numerator: str, denominator: str) -> float:
    """``times[numerator] / times[denominator]``."""
    return times[numerator] / times[denominator]


def fmt_us(seconds: float) -> str:
    """Microseconds, for tables."""
    return f"{seconds * 1e6:,.1f} µs"


class TinyGPT(nn.Module):
    """A GPT-2-like decoder stack (pre-norm blocks, tied embedding): 23.2 M parameters at the defaults."""

    def __init__(self, vocab: int = 8192, width: int = 512, layers: int = 6, heads: int = 8, context: int = 64):
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, width), nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.norm(self.blocks(x, mask=mask, is_causal=True)) @ self.embed.weight.T
