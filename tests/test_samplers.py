"""Samplers on hand-made score arrays: exact answers for top, frequencies for the random ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hardneg.select import samplers
from hardneg.candidates import CandidateSet
from hardneg.errors import HardnegError
from hardneg.select import Sampler, SelectionPolicy, select

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])


def _first_pick_counts(fn, draws=4000, **kw) -> np.ndarray:
    """How often each position is drawn first (k=1), over many draws of one seeded stream."""
    rng = np.random.default_rng(0)
    counts = np.zeros(len(SCORES), int)
    for _ in range(draws):
        counts[fn(SCORES, 1, rng, **kw)[0]] += 1
    return counts


def _chi2_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_top_takes_highest_scores_ties_by_rank():
    scores = np.array([0.5, 0.9, 0.9, 0.1])
    ranks = np.array([4, 3, 2, 1])
    assert samplers.top(scores, 3, ranks=ranks).tolist() == [2, 1, 0]
    assert samplers.top(scores, 10).tolist() == [1, 2, 0, 3]  # k larger than n: all, best first
    assert samplers.top(scores, 0).tolist() == []


def test_nan_scores_are_taken_last():
    scores = np.array([np.nan, 0.1, 0.2])
    assert samplers.top(scores, 3).tolist() == [2, 1, 0]


def test_uniform_is_seeded_distinct_and_flat():
    a = samplers.uniform(SCORES, 5, np.random.default_rng(7))
    b = samplers.uniform(SCORES, 5, np.random.default_rng(7))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 5
    counts = _first_pick_counts(samplers.uniform)
    assert _chi2_uniform(counts) < 24.3  # chi-square 7 dof, p = 0.001


def test_simans_is_not_uniform_and_peaks_at_the_positive_score():
    # positive scored 0.6 -> position 3; weights fall with the distance to it
    counts = _first_pick_counts(samplers.simans, pos_score=0.6, a=1.0)
    assert _chi2_uniform(counts) > 100
    assert counts.argmax() == 3
    assert counts[3] > counts[1] > counts[0]  # 0.6 > 0.8 > 0.9: nearer the positive is likelier
    assert counts[3] > counts[5] > counts[7]


def test_simans_matches_its_distribution():
    # first draw ~ exp(-a (z - z_pos)^2): compare with the analytic probabilities
    z = (SCORES - SCORES.mean()) / SCORES.std()
    z_pos = (0.6 - SCORES.mean()) / SCORES.std()
    p = np.exp(-(z - z_pos) ** 2)
    p /= p.sum()
    counts = _first_pick_counts(samplers.simans, draws=8000, pos_score=0.6)
    expected = p * counts.sum()
    assert float(((counts - expected) ** 2 / expected).sum()) < 24.3


def test_simans_b_moves_the_peak_below_the_positive():
    counts = _first_pick_counts(samplers.simans, pos_score=0.9, a=4.0, b=-1.0)
    peak = SCORES[counts.argmax()]
    assert 0.5 <= peak <= 0.7  # one std (~0.23) below 0.9


def test_simans_without_a_scored_positive_is_uniform():
    counts = _first_pick_counts(samplers.simans, pos_score=np.nan)
    assert _chi2_uniform(counts) < 24.3


def test_simans_with_a_zero_is_uniform():
    counts = _first_pick_counts(samplers.simans, pos_score=0.6, a=0.0)
    assert _chi2_uniform(counts) < 24.3


def test_softmax_temperature_moves_between_top_and_uniform():
    cold = _first_pick_counts(samplers.softmax, temperature=0.05)
    assert cold[0] > 0.95 * cold.sum()
    hot = _first_pick_counts(samplers.softmax, temperature=100.0)
    assert _chi2_uniform(hot) < 24.3
    mid = _first_pick_counts(samplers.softmax, temperature=1.0)
    assert all(mid[i] > mid[i + 1] for i in range(3))  # more likely the higher the score


def test_weighted_samplers_draw_without_replacement_deterministically():
    rng = np.random.default_rng(3)
    picks = samplers.softmax(SCORES, 8, rng, temperature=0.5)
    assert sorted(picks.tolist()) == list(range(8))
    again = samplers.softmax(SCORES, 8, np.random.default_rng(3), temperature=0.5)
    assert picks.tolist() == again.tolist()


def test_grouped_top_k_handles_unsorted_groups_and_matches_the_fast_path():
    keys = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
    groups = np.array([1, 0, 1, 0, 1, 0])
    chosen = samplers.grouped_top_k(keys, groups, 2)
    assert chosen.tolist() == [1, 5, 2, 4]
    # already sorted input takes the no-sort path and must agree with a full sort
    order = np.lexsort((-keys, groups))
    fast = samplers.grouped_top_k(keys[order], groups[order], 2)
    assert order[fast].tolist() == chosen.tolist()


def test_bad_arguments_fail_clearly():
    with pytest.raises(HardnegError, match=">= 0"):
        samplers.top(SCORES, -1)
    with pytest.raises(HardnegError, match="temperature"):
        samplers.softmax(SCORES, 1, np.random.default_rng(0), temperature=0)
    with pytest.raises(HardnegError, match="Generator"):
        samplers.uniform(SCORES, 1, 42)


# ---- the registry ------------------------------------------------------------------------------
def test_the_registry_defines_the_enum_the_help_and_the_baselines():
    names = ["top", "uniform", "simans", "softmax", "random", "none"]
    assert list(samplers.REGISTRY) == names
    assert [m.value for m in Sampler] == names and Sampler.SIMANS == "simans" and Sampler.NONE.value == "none"
    assert Sampler is samplers.Sampler
    assert samplers.baselines() == ("random", "none")
    text = samplers.help_text()
    assert "\n" not in text and all(f"{n}: {samplers.REGISTRY[n].help}" in text for n in names)
    with pytest.raises(HardnegError, match="already registered"):
        samplers.register("top", "again")(lambda x, policy, rng: x.scores)
    with pytest.raises(HardnegError, match="does not choose among candidates"):
        samplers.draw("random", samplers.Survivors(SCORES, np.zeros(8, np.int64)), 1, None, np.random.default_rng(0))


def test_draw_takes_k_per_unit_with_rank_ties():
    x = samplers.Survivors(np.array([0.5, 0.9, 0.9, 0.1, 0.7]), np.array([0, 0, 0, 1, 1]),
                           ranks=np.array([4, 3, 2, 1, 5]))
    assert samplers.draw("top", x, 2, None, None).tolist() == [2, 1, 4, 3]


@pytest.mark.parametrize("sampler, kw", [("top", {}), ("uniform", {}), ("simans", {"simans_a": 2.0, "simans_b": -0.5}),
                                         ("softmax", {"temperature": 0.5})])
def test_select_and_the_per_query_sampler_run_one_kernel(sampler, kw):
    # one query, positive at rank 1 (0.95), candidates d2..d9 scored SCORES: no filter, same scale
    docs = [f"d{r}" for r in range(2, 10)]
    frame = pd.DataFrame({"query_id": "q", "doc_id": ["p", *docs], "is_positive": [True] + [False] * 8,
                          "rank_dense": range(1, 10), "score_dense": [0.95, *SCORES]})
    cands = CandidateSet.from_frame(frame, scorers=["dense"])
    for seed in range(5):
        mined = select(cands, SelectionPolicy.unfiltered(sampler=sampler, num_negatives=3, seed=seed, **kw))
        rng = np.random.default_rng(seed)
        one = {"top": lambda: samplers.top(SCORES, 3),
               "uniform": lambda: samplers.uniform(SCORES, 3, rng),
               "simans": lambda: samplers.simans(SCORES, 3, rng, pos_score=0.95, a=2.0, b=-0.5),
               "softmax": lambda: samplers.softmax(SCORES, 3, rng, temperature=0.5)}[sampler]()
        assert set(mined.negatives["doc_id"]) == {docs[i] for i in one}
