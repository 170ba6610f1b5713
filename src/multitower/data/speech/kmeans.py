"""k-means for speech units: k-means++ seeding, batched distances, Lloyd iterations.

Distances are computed block by block as ``|x|^2 - 2 x.c + |c|^2`` (one matmul
per block), so memory stays at ``chunk_size * k`` whatever the number of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KMeansResult:
    """Centroids ``(k, D)``, final inertia (sum of squared distances), iterations run."""

    centroids: torch.Tensor
    inertia: float
    n_iter: int


def assign(
    x: torch.Tensor, centroids: torch.Tensor, *, chunk_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of ``x`` (squared Euclidean distance).

    Args:
        x: ``(N, D)``.
        centroids: ``(k, D)``.
        chunk_size: rows per distance block (bounds memory at ``chunk_size * k``).

    Returns:
        ``(labels, sq_dist)``: ``(N,)`` long and ``(N,)`` float.
    """
    c_sq = centroids.pow(2).sum(dim=1)  # (k,)
    labels, dists = [], []
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]  # (n, D)
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, computed as one matmul per block.
        d = xb.pow(2).sum(dim=1, keepdim=True) - 2.0 * (xb @ centroids.T) + c_sq[None, :]  # (n, k)
        best, idx = d.min(dim=1)  # (n,), (n,)
        labels.append(idx)
        dists.append(best.clamp(min=0.0))
    if not labels:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=x.dtype)
    return torch.cat(labels), torch.cat(dists)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to
    the squared distance to the nearest centre chosen so far.

    Args:
        x: ``(N, D)`` data, ``N >= k``.
        k: number of centres.
        generator: source of randomness.

    Returns:
        ``(k, D)`` initial centroids (rows of ``x``).
    """
    n = x.shape[0]
    x_sq = x.pow(2).sum(dim=1)  # (N,)

    def sq_dist_to(i: int) -> torch.Tensor:
        # |x - x_i|^2 as a matrix-vector product: no (N, D) temporary per step.
        return (x_sq - 2.0 * (x @ x[i]) + x_sq[i]).clamp(min=0.0)  # (N,)

    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    d2 = sq_dist_to(first)  # (N,)
    for _ in range(1, k):
        total = float(d2.sum())
        if total > 0:
            idx = int(torch.multinomial(d2 / total, 1, generator=generator))
        else:  # fewer distinct points than k: duplicates are fixed by Lloyd's empty-cluster rule
            idx = int(torch.randint(n, (1,), generator=generator))
        chosen.append(idx)
        d2 = torch.minimum(d2, sq_dist_to(idx))
    return x[chosen].clone()


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    n_iter: int = 30,
    seed: int = 0,
    tol: float = 1e-4,
    init_sample: int | None = None,
    chunk_size: int = 8192,
) -> KMeansResult:
    """Lloyd's k-means with k-means++ initialisation.

    An empty cluster is moved onto the point currently farthest from its
    centroid. Iteration stops after ``n_iter`` steps or when the relative
    decrease of the inertia falls below ``tol``.

    Args:
        x: ``(N, D)`` float data, ``N >= k``.
        k: number of clusters.
        n_iter: maximum Lloyd iterations.
        seed: seed of the initialisation.
        tol: relative inertia improvement that counts as converged.
        init_sample: run k-means++ on this many random rows (default
            ``min(N, 64 * k)``); seeding costs ``k`` passes over them.
        chunk_size: rows per distance block.

    Raises:
        ValueError: if ``x`` is not 2-D or has fewer than ``k`` rows.
    """
    if x.dim() != 2 or x.shape[0] < k:
        raise ValueError(
            f"kmeans needs a (N, D) tensor with N >= k={k}, got shape {tuple(x.shape)}"
        )
    x = x.float()
    generator = torch.Generator().manual_seed(seed)
    n_init = min(x.shape[0], init_sample if init_sample is not None else 64 * k)
    if n_init < k:
        raise ValueError(f"kmeans: init_sample={init_sample} must be >= k={k}")
    seed_rows = (
        x if n_init == x.shape[0] else x[torch.randperm(x.shape[0], generator=generator)[:n_init]]
    )
    centroids = kmeans_plus_plus(seed_rows, k, generator)  # (k, D)
    prev = math.inf
    n_done = 0
    for _ in range(n_iter):
        n_done += 1
        labels, dists = assign(x, centroids, chunk_size=chunk_size)  # (N,), (N,)
        inertia = float(dists.sum())  # of the centroids before this update
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (k, D)
        counts = torch.bincount(labels, minlength=k)  # (k,)
        centroids = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            far = dists.argsort(descending=True)[: len(empty)]
            centroids[empty] = x[far]
        elif math.isfinite(prev) and prev - inertia <= tol * prev:
            break
        prev = inertia
    _, dists = assign(x, centroids, chunk_size=chunk_size)
    return KMeansResult(centroids=centroids, inertia=float(dists.sum()), n_iter=n_done)


def penalised_assign(x: torch.Tensor, centroids: torch.Tensor, switch_cost: float) -> torch.Tensor:
    """The unit sequence minimising distance plus a cost per change of unit.

    Minimises ``sum_t |x_t - c_{z_t}|^2 + switch_cost * #{t : z_t != z_{t-1}}``
    over all label sequences ``z`` by a Viterbi pass (``O(n k)``: staying costs
    nothing, switching costs ``switch_cost`` from the best previous label).
    ``switch_cost = 0`` is :func:`assign`'s nearest centroid per row.

    Args:
        x: ``(n, D)`` vectors of one utterance, in time order.
        centroids: ``(k, D)``.
        switch_cost: ``>= 0``, in squared-distance units.

    Returns:
        ``(n,)`` long labels.
    """
    if switch_cost < 0:
        raise ValueError(f"penalised_assign: switch_cost must be >= 0, got {switch_cost}")
    if switch_cost == 0 or x.shape[0] <= 1:
        return assign(x, centroids)[0]
    dist = (
        x.pow(2).sum(dim=1, keepdim=True) - 2.0 * (x @ centroids.T) + centroids.pow(2).sum(dim=1)
    ).clamp(min=0.0)  # (n, k)
    n, k = dist.shape
    labels = torch.arange(k)
    cost = dist[0].clone()  # (k,) best cost of a sequence ending in each label
    back = torch.empty(n - 1, k, dtype=torch.long)  # the previous label of each best path
    for t in range(1, n):
        best, best_label = cost.min(dim=0)
        switch = best + switch_cost
        stay = cost <= switch
        back[t - 1] = torch.where(stay, labels, best_label)
        cost = dist[t] + torch.minimum(cost, switch)
    path = torch.empty(n, dtype=torch.long)
    path[-1] = cost.argmin()
    back_list = back.tolist()
    current = int(path[-1])
    for t in range(n - 2, -1, -1):
        current = back_list[t][current]
        path[t] = current
    return path
