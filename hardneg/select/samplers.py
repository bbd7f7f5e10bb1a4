"""Samplers: which of a query's surviving candidates become its k negatives.

A sampler is one entry of :data:`REGISTRY` (a :class:`SamplerSpec`): a name, a one-line help
and a vectorised kernel. :func:`hardneg.select.select` draws every query at once through
:func:`draw`; the :class:`Sampler` enum, :func:`help_text` and :func:`baselines` are built
from the same table, so a new sampler is one ``@register`` function here (plus a
``SelectionPolicy`` field if it has a new parameter). Pick one by the hardness you want:

* ``top``: the k highest scores: the hardest negatives, also the likeliest false
  negatives; pair it with a positive-aware filter (NV-Retriever: ``percent 0.95``).
* ``uniform``: any k survivors alike: a softer, more diverse mix.
* ``simans``: SimANS: prefers candidates whose score is near the positive's, neither
  the top (probably unlabeled positives) nor the tail (too easy).
* ``softmax``: weights ``exp(z / temperature)``: between ``top`` (small temperature) and
  ``uniform`` (large temperature).
* baselines that use no candidates (``uses_candidates=False``; :func:`hardneg.select.select`
  handles them itself): ``random`` (k documents from the whole corpus) and ``none`` (no
  mined negatives: in-batch negatives only).

:func:`top`, :func:`uniform`, :func:`simans` and :func:`softmax` run the same kernels on one
query's scores.

Weighted samplers draw with the Gumbel-top-k trick: adding independent Gumbel noise to the
log-weights and keeping the k largest is an exact draw of k items without replacement with
probability proportional to the weights (successive sampling / Plackett-Luce). It needs one
vectorised noise draw, so :func:`grouped_top_k` can sample every query at once.
``simans`` and ``softmax`` work on per-query standardised scores ``z = (s - mean) / std``,
so ``a`` and ``temperature`` mean the same on cosine, BM25 and cross-encoder scales.
A NaN score has zero weight: it is chosen only when nothing else is left.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from hardneg.errors import HardnegError

__all__ = ["REGISTRY", "Sampler", "SamplerSpec", "Survivors", "register", "register_baseline"]


# ---- the registry ----------------------------------------------------------------------------
@dataclass
class Survivors:
    """The entries a sampler chooses from, one element per (output row, candidate).

    ``scores`` under ``score_by`` (NaN: unscored), ``units`` the output row (group) of each
    entry, ``ref`` its row's reference positive score (NaN: no scored positive), ``ranks``
    the original ranks that break ties (None: position only). ``scale_of()`` gives the
    ``(center, scale)`` of ``z``, per entry or scalar (None: the finite scores' mean and std);
    it is called only by kernels that read :attr:`z` or :attr:`z_ref`.
    """

    scores: np.ndarray
    units: np.ndarray
    ref: np.ndarray | float = np.nan
    ranks: np.ndarray | None = None
    scale_of: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False)

    @cached_property
    def _standardized(self) -> tuple[np.ndarray, np.ndarray]:
        return standardize(self.scores, self.ref, *(self.scale_of() if self.scale_of else (None, None)))

    @property
    def z(self) -> np.ndarray:
        """Standardised scores ``(scores - center) / scale``."""
        return self._standardized[0]

    @property
    def z_ref(self) -> np.ndarray:
        """The reference positive score on the same scale (NaN: no scored positive)."""
        return self._standardized[1]


Kernel = Callable[[Survivors, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: ``kernel(survivors, policy, rng)`` returns a sort key per entry, and the
    k largest per unit are chosen (:func:`draw`). Baselines (``uses_candidates=False``) have
    no kernel: :func:`hardneg.select.select` draws them from the corpus itself."""

    name: str
    help: str
    uses_candidates: bool = True
    kernel: Kernel | None = None


REGISTRY: dict[str, SamplerSpec] = {}


def register(name: str, help: str) -> Callable[[Kernel], Kernel]:
    """Decorator adding a kernel to :data:`REGISTRY` under ``name`` (registration order is
    the order of the CLI help and of :class:`Sampler`)."""

    def add(kernel: Kernel) -> Kernel:
        _add(SamplerSpec(name, help, True, kernel))
        return kernel

    return add


def register_baseline(name: str, help: str) -> None:
    """Add a sampler that uses no candidates; :func:`hardneg.select.select` implements it."""
    _add(SamplerSpec(name, help, False, None))


def _add(spec: SamplerSpec) -> None:
    if spec.name in REGISTRY:
        raise HardnegError(f"sampler {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec


def draw(name: str, x: Survivors, k: int, policy: Any, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``x``) of up to k entries per unit chosen by sampler ``name``,
    ordered by unit then key; ``policy`` supplies the sampler's parameters."""
    spec = REGISTRY[name]
    if spec.kernel is None:
        raise HardnegError(f"sampler '{name}' does not choose among candidates")
    return grouped_top_k(spec.kernel(x, policy, rng), x.units, k, tiebreak=x.ranks)


def help_text() -> str:
    """One line naming every sampler with its help (the ``sampler`` option's help)."""
    return "; ".join(f"{s.name}: {s.help}" for s in REGISTRY.values()) + "."


def baselines() -> tuple[str, ...]:
    """Names of the samplers that use no candidates (so no filters apply to them)."""
    return tuple(s.name for s in REGISTRY.values() if not s.uses_candidates)


# ---- the samplers ----------------------------------------------------------------------------
@register("top", "the k highest scores (hardest; pair with a positive-aware filter)")
def _top_keys(x: Survivors, policy: Any, rng: np.random.Generator) -> np.ndarray:
    """Keys = the scores: the k highest, ties by original rank. Draws nothing from ``rng``."""
    return x.scores


@register("uniform", "any k survivors alike (softer, more diverse)")
def _uniform_keys(x: Survivors, policy: Any, rng: np.random.Generator) -> np.ndarray:
    """Gumbel noise on equal weights: a random permutation cut at k."""
    return gumbel_keys(np.zeros(len(x.scores)), rng)


@register("simans", "near the positive's score, exp(-a (z - z_pos - b)^2) (SimANS; simans_a, simans_b)")
def _simans_keys(x: Survivors, policy: Any, rng: np.random.Generator) -> np.ndarray:
    """SimANS log-weights on standardised scores; a row with no scored positive draws
    uniformly (not "top")."""
    logw = simans_log_weights(x.z, x.z_ref, policy.simans_a, policy.simans_b)
    return gumbel_keys(np.where(np.isnan(x.z_ref), 0.0, logw), rng)


@register("softmax", "weights exp(z / temperature), between top and uniform (temperature)")
def _softmax_keys(x: Survivors, policy: Any, rng: np.random.Generator) -> np.ndarray:
    """Softmax log-weights on standardised scores."""
    return gumbel_keys(softmax_log_weights(x.z, policy.temperature), rng)


register_baseline("random", "k documents from the whole corpus, not the candidates")
register_baseline("none", "no mined negatives (in-batch negatives only)")

Sampler = Enum("Sampler", {n.upper().replace("-", "_"): n for n in REGISTRY}, type=str, module=__name__)
Sampler.__doc__ = "The registered samplers by name (built from :data:`REGISTRY`)."


# ---- one query at a time (the same kernels) ---------------------------------------------------
def top(scores: np.ndarray, k: int, rng: np.random.Generator | None = None, *,
        ranks: np.ndarray | None = None) -> np.ndarray:
    """The k highest scores, ties broken by original rank (then position). ``rng`` is unused."""
    return _one_query("top", scores, k, rng, ranks=ranks)


def uniform(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k survivors uniformly at random (a random permutation cut at k)."""
    return _one_query("uniform", scores, k, rng)


def simans(scores: np.ndarray, k: int, rng: np.random.Generator, *, pos_score: float,
           a: float = 1.0, b: float = 0.0, center: float | None = None,
           scale: float | None = None) -> np.ndarray:
    """SimANS: draw with probability ``∝ exp(-a * (z - z_pos - b)**2)``.

    ``z`` standardises the scores by ``center``/``scale`` (default: the mean and standard
    deviation of ``scores``; :func:`hardneg.select.select` passes those of the query's whole
    retrieved list, so filtering does not change the scale). The paper (Zhou et al., EMNLP
    2022) uses raw scores with ``b = 0`` and a per-dataset ``a`` (its released code uses 0.5
    to 3); on standardised scores the default ``a = 1`` is a Gaussian of width
    ``1/sqrt(2) ≈ 0.7`` standard deviations centred on the positive's score (``b = 0``).
    A negative ``b`` moves the peak below the positive's score; a NaN ``pos_score`` draws
    uniformly.
    """
    return _one_query("simans", scores, k, rng, SimpleNamespace(simans_a=a, simans_b=b),
                      ref=pos_score, center=center, scale=scale)


def softmax(scores: np.ndarray, k: int, rng: np.random.Generator, *, temperature: float = 1.0,
            center: float | None = None, scale: float | None = None) -> np.ndarray:
    """Draw with probability ``∝ exp(z / temperature)`` on standardised scores ``z``.

    Small temperatures approach :func:`top`, large ones :func:`uniform`; ``temperature`` is
    in standard deviations of the query's scores, whatever the scorer.
    """
    return _one_query("softmax", scores, k, rng, SimpleNamespace(temperature=temperature),
                      center=center, scale=scale)


def _one_query(name: str, scores: np.ndarray, k: int, rng: Any, params: Any = None, *, ranks=None,
               ref: float = np.nan, center: float | None = None, scale: float | None = None) -> np.ndarray:
    """:func:`draw` on one query's scores (a single unit)."""
    scores = np.asarray(scores, dtype=np.float64)
    x = Survivors(scores, np.zeros(len(scores), np.int64), ref, ranks, lambda: (center, scale))
    return draw(name, x, k, params, rng)


# ---- building blocks of the kernels -----------------------------------------------------------
def standardize(scores: np.ndarray, pos_score: float | np.ndarray, center: float | np.ndarray | None = None,
                scale: float | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores - center) / scale`` and the same for ``pos_score``.

    Defaults: mean and standard deviation of the finite ``scores``; a zero or undefined
    scale becomes 1 (all scores equal: every z is then 0).
    """
    finite = scores[np.isfinite(scores)]
    if center is None:
        center = float(finite.mean()) if finite.size else 0.0
    if scale is None:
        scale = float(finite.std()) if finite.size > 1 else 1.0
    scale = np.where(np.isfinite(scale) & (np.asarray(scale) > 0), scale, 1.0)
    return (scores - center) / scale, (np.asarray(pos_score, dtype=np.float64) - center) / scale


def simans_log_weights(z: np.ndarray, z_pos: float | np.ndarray, a: float = 1.0, b: float = 0.0) -> np.ndarray:
    """``-a * (z - z_pos - b)**2``: the SimANS log-weight (NaN stays NaN: weight 0)."""
    if a < 0:
        raise HardnegError(f"simans a must be >= 0, got {a}")
    return -a * (z - z_pos - b) ** 2


def softmax_log_weights(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``z / temperature``: the softmax log-weight."""
    if not temperature > 0:
        raise HardnegError(f"softmax temperature must be > 0, got {temperature}")
    return z / temperature


def gumbel_keys(log_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Perturbed keys: the k largest are a weighted draw of k without replacement."""
    if not isinstance(rng, np.random.Generator):
        raise HardnegError("pass a seeded numpy.random.Generator (np.random.default_rng(seed))")
    return np.asarray(log_weights, dtype=np.float64) + rng.gumbel(size=len(log_weights))


def grouped_top_k(keys: np.ndarray, groups: np.ndarray, k: int,
                  tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k largest ``keys`` within each group, ordered by group then key.

    Ties go to the smaller ``tiebreak`` (e.g. the original rank), then the earlier position;
    NaN keys count as -inf. This is the whole selection step for every query at once.
    """
    if k < 0:
        raise HardnegError(f"the number of negatives must be >= 0, got {k}")
    n = len(keys)
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.float64)
    keys = np.where(np.isnan(keys), -np.inf, keys)
    groups = np.asarray(groups)
    tiebreak = np.zeros(n, np.int64) if tiebreak is None else np.asarray(tiebreak)
    if _already_ordered(keys, groups, tiebreak):  # e.g. top-k of a rank-sorted table: no sort
        order = np.arange(n)
    else:
        order = np.lexsort((tiebreak, -keys, groups))  # lexsort is stable: then by position
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    within = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return order[within < k]


def _already_ordered(keys: np.ndarray, groups: np.ndarray, tiebreak: np.ndarray) -> bool:
    """True when entries are sorted by group, then key descending, then tiebreak."""
    if np.any(groups[1:] < groups[:-1]):
        return False
    same = groups[1:] == groups[:-1]
    ok = (keys[:-1] > keys[1:]) | ((keys[:-1] == keys[1:]) & (tiebreak[:-1] <= tiebreak[1:]))
    return bool(np.all(ok | ~same))
