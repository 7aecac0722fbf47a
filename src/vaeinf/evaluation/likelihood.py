"""Importance-sampled log-likelihood and the L_K curve, in bounded memory.

Everything runs without gradients: the data are processed in chunks of points and samples
sized from a memory budget, and chunks are merged with logsumexp in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaeinf.core.methods import Method
from vaeinf.core.methods.base import chunking


def summary(v: Tensor) -> dict:
    """Mean, standard error of the mean and count of the values v (N,), in float64; the
    standard error is NaN for a single value."""
    v = v.double()
    se = (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")
    return {"mean": v.mean().item(), "stderr": se, "n": len(v)}


@torch.no_grad()
def log_weight_chunks(model: Method, x: Tensor, K: int, memory_mb: float, block=None):
    """Yield (slice, chunks) for consecutive chunks of points, where ``chunks`` yields that
    chunk's K log-weights as float64 tensors (b, s) of consecutive samples, drawn one sample
    chunk at a time: only one (b, s) chunk, at most the budget's rows, is held at once, so
    memory does not grow with K. Consume ``chunks`` before advancing to the next points.
    With ``block`` (K a multiple of it), every sample chunk is a whole number of blocks, for a
    ``stratified_proposal``; a block larger than the budget is drawn whole."""
    b, s = chunking(model, len(x), K, memory_mb)
    if block is not None:
        s = max(block, s // block * block)
    for start in range(0, len(x), b):
        xb = x[start : start + b]
        chunks = (
            model.eval_log_weights(xb, min(s, K - k0), block).double().T  # (b, s)
            for k0 in range(0, K, s)
        )
        yield slice(start, start + len(xb)), chunks


class LogMeanExp:
    """Streaming log((1/n) sum_k exp(a_k)) per point over chunks of a's columns: a running
    maximum m and sum_k exp(a_k - m) in float64, rescaled whenever m grows, so the result
    equals logsumexp over all n at once while holding one chunk."""

    def __init__(self, b: int, device=None):
        self.max = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
        self.sum = torch.zeros(b, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, a: Tensor) -> None:
        """Add the columns of a (b, s)."""
        if a.shape[1] == 0:
            return
        new_max = torch.maximum(self.max, a.max(1).values)  # (b,)
        # A point whose weights so far are all -inf (or +inf) keeps a shift of 0: no inf - inf.
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        self.sum = self.sum * torch.exp(self.max - shift) + torch.exp(a - shift[:, None]).sum(1)
        self.max = new_max
        self.n += a.shape[1]

    def value(self) -> Tensor:
        """(b,) log-mean-exp of every column added."""
        shift = torch.where(torch.isfinite(self.max), self.max, torch.zeros_like(self.max))
        return shift + torch.log(self.sum) - math.log(self.n)


class GroupedLogMeanExp:
    """The mean over consecutive disjoint groups of K columns of each group's log-mean-exp, fed
    chunk by chunk: full groups inside a chunk at once (b, G, K), a group split across chunks
    through a :class:`LogMeanExp`; columns beyond ``groups`` * K are ignored."""

    def __init__(self, b: int, K: int, groups: int, device=None):
        self.K, self.groups, self.b, self.device = K, groups, b, device
        self.total = torch.zeros(b, dtype=torch.float64, device=device)
        self.done = 0
        self.partial = LogMeanExp(b, device)

    def add(self, a: Tensor) -> None:
        a = a[:, : (self.groups - self.done) * self.K - self.partial.n]  # only the groups used
        if self.partial.n:  # finish the group a previous chunk began
            take = self.K - self.partial.n
            self.partial.add(a[:, :take])
            a = a[:, take:]
            if self.partial.n == self.K:
                self._finish(self.partial.value())
                self.partial = LogMeanExp(self.b, self.device)
        g = a.shape[1] // self.K
        if g:
            groups = a[:, : g * self.K].reshape(len(a), g, self.K)  # (b, g, K)
            self.total += (torch.logsumexp(groups, -1) - math.log(self.K)).sum(-1)
            self.done += g
        self.partial.add(a[:, g * self.K :])

    def _finish(self, value: Tensor) -> None:
        self.total += value
        self.done += 1

    def value(self) -> Tensor:
        """(b,) mean over the groups of their log-mean-exp."""
        return self.total / self.done


def log_likelihood(model: Method, x: Tensor, K: int = 5000, memory_mb: float = 512) -> dict:
    """Importance-sampled estimate of log p(x) (Burda et al. 2015, Sec. 5: L_K at K = 5000).

    log p^(x) = logsumexp_k log w_k - log K per point, accumulated over sample chunks
    (:class:`LogMeanExp`); returns mean, standard error of the mean over points, and the
    per-point estimates.
    """
    per_point = torch.empty(len(x), dtype=torch.float64)
    for sl, chunks in log_weight_chunks(model, x, K, memory_mb):
        acc = LogMeanExp(sl.stop - sl.start, x.device)
        for lw in chunks:
            acc.add(lw)
        per_point[sl] = acc.value()
    return summary(per_point) | {"per_point": per_point}


def bound_curve(
    model: Method, x: Tensor, ks: list[int], memory_mb: float = 512, per_point: bool = False
):
    """L_K for every K in ``ks`` from one draw of max(ks) samples per point.

    The K_max samples are split into floor(K_max / K) disjoint groups of K; each group gives an
    unbiased estimate of L_K and their average has lower variance than a single group, at no
    extra cost (a ``stratified_proposal`` draws floor(K_max / K) blocks of K for each K
    instead, as a group cut from a larger deterministic mixture is not one). The groups are
    accumulated as the sample chunks arrive
    (:class:`GroupedLogMeanExp`), so memory does not grow with K_max. Returns {K: summary},
    and with ``per_point`` also {K: the per-point values (N,) float64}.
    """
    k_max = max(ks)
    if model.stratified_proposal:  # one draw per K, in blocks of K (same budget of samples)
        per_k = {}
        for K in ks:
            per_k |= _grouped_bounds(model, x, [K], k_max // K * K, memory_mb, block=K)
    else:
        per_k = _grouped_bounds(model, x, ks, k_max, memory_mb)
    curve = {K: summary(per_k[K]) for K in ks}
    return (curve, per_k) if per_point else curve


def _grouped_bounds(model, x, ks, n, memory_mb, block=None) -> dict[int, Tensor]:
    """Per point, the mean over the floor(n / K) disjoint groups of K of one draw of n samples
    of each group's log-mean-exp, for every K in ks: {K: (N,)}."""
    per_k = {K: torch.empty(len(x), dtype=torch.float64) for K in ks}
    for sl, chunks in log_weight_chunks(model, x, n, memory_mb, block):
        b = sl.stop - sl.start
        accs = {K: GroupedLogMeanExp(b, K, n // K, x.device) for K in ks}
        for lw in chunks:
            for acc in accs.values():
                acc.add(lw)
        for K, acc in accs.items():
            per_k[K][sl] = acc.value()
    return per_k
