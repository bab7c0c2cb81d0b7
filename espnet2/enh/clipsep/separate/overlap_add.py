"""Streaming overlap-add: a long signal processed in overlapping chunks, cross-faded with raised-cosine weights."""

import math
from typing import Callable, List, Optional

import numpy as np
import torch

__all__ = ["OverlapAdd"]


class OverlapAdd:
    """Chunked processing of a stream with overlapping chunks and a raised-cosine cross-fade.

    Chunk ``k`` covers samples ``[k H, k H + L)`` (``H = L - O``). In each overlap the earlier chunk fades out
    with ``1 - w`` and the later one fades in with ``w = sin^2``, so the weights sum to 1 and a process that is
    the same in both chunks (e.g. a constant gain) is reconstructed exactly. A chunk is processed only once it
    is known not to be the last; the last one is not faded out, the first not faded in, and the last one is
    extended backwards to a full ``L`` samples (its extra head is dropped), so that no chunk is shorter than
    ``L`` unless the whole input is. An input of at most ``L`` samples is therefore one unweighted call of ``fn``.
    Memory: at most ``2 L`` input samples and ``O`` output samples are held, whatever the stream's length.

    Args:
        fn: Maps a chunk ``(B, n)`` to outputs ``(Q, B, n)``.
        chunk: ``L`` in samples (None: one pass over the whole stream at :meth:`flush`).
        overlap: ``O`` in samples, at most ``L / 2``.
        align: Re-order each chunk's Q outputs to best match the previous chunk in their overlap (for PIT
            models, whose output order is arbitrary per chunk).
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], chunk: Optional[int], overlap: int = 0, align: bool = False
    ):
        if chunk is not None and (chunk < 1 or not 0 <= overlap <= chunk // 2):
            raise ValueError(f"need chunk >= 1 and 0 <= overlap <= chunk / 2, got chunk {chunk}, overlap {overlap}")
        self.fn, self.chunk, self.overlap = fn, chunk, overlap if chunk is not None else 0
        self.align = align
        t = (torch.arange(self.overlap, dtype=torch.float64) + 0.5) / max(self.overlap, 1)
        self.fade_in = torch.sin(0.5 * math.pi * t).pow(2).float()
        self.pending: List[torch.Tensor] = []  # input not yet processed, from the next chunk's start on
        self.previous: Optional[torch.Tensor] = None  # (B, L) input of the previous chunk
        self.tail: Optional[torch.Tensor] = None  # (Q, B, O) previous chunk's output in the next overlap
        self.calls = 0

    def _buffered(self) -> int:
        return sum(x.shape[-1] for x in self.pending)

    def _aligned(self, y: torch.Tensor) -> torch.Tensor:
        import itertools

        head = y[..., : self.overlap]
        perms = list(itertools.permutations(range(y.shape[0])))
        for b in range(y.shape[1]):
            scores = [sum(float(self.tail[q, b] @ head[p, b]) for q, p in enumerate(perm)) for perm in perms]
            y[:, b] = y[list(perms[int(np.argmax(scores))]), b]
        return y

    def _process(self, x: torch.Tensor, last: bool, skip: int = 0) -> torch.Tensor:
        y = self.fn(x)[..., skip:]
        self.calls += 1
        o = self.overlap
        if self.tail is not None and o:
            y = self._aligned(y.clone()) if self.align and y.shape[0] > 1 else y.clone()
            y[..., :o] = y[..., :o] * self.fade_in + self.tail * (1.0 - self.fade_in)
        if last:
            self.tail = self.previous = None
            return y
        self.previous = x
        hop = x.shape[-1] - o
        self.tail = y[..., hop:] if o else None
        return y[..., :hop]

    def push(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Add input ``(B, n)``; returns the finished output ``(Q, B, m)`` (None while nothing is final)."""
        if x.shape[-1]:
            self.pending.append(x)
        if self.chunk is None or self._buffered() <= self.chunk:
            return None
        buf = torch.cat(self.pending, dim=-1)
        outs, start, hop = [], 0, self.chunk - self.overlap
        while buf.shape[-1] - start > self.chunk:  # more input follows this chunk: it is not the last
            outs.append(self._process(buf[..., start : start + self.chunk], last=False))
            start += hop
        self.pending = [buf[..., start:]]
        return torch.cat(outs, dim=-1)

    def flush(self) -> Optional[torch.Tensor]:
        """Process what is left as the last chunk; returns its output ``(Q, B, m)`` (None if nothing is left)."""
        if not self._buffered():
            return None
        buf = torch.cat(self.pending, dim=-1)
        self.pending = []
        skip = 0
        if self.previous is not None and buf.shape[-1] < self.chunk:
            # Extend backwards with the previous chunk's input (it holds H = L - O >= L - len(buf) samples
            # before this chunk's start).
            skip = self.chunk - buf.shape[-1]
            hop = self.chunk - self.overlap
            buf = torch.cat([self.previous[..., hop - skip : hop], buf], dim=-1)
        return self._process(buf, last=True, skip=skip)
