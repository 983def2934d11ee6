"""The leaderboard's Bradley–Terry ratings: checked against `choix` (a reference implementation), a case solved by
hand, ties, bootstrap intervals, and recovery of known strengths from votes drawn with them."""

from __future__ import annotations

import math

import choix
import numpy as np
import pytest

from chat.compare import Outcome, Vote
from chat.leaderboard import PRIOR, fit, pairwise, ratings

TRUE_STRENGTHS = [-1.5, -0.8, -0.2, 0.4, 1.0, 1.7]  # theta of contenders 0..5, each far enough from the next
LABELS = [f"model-{k} · 💬 Chat · temperature 0.{k}" for k in range(len(TRUE_STRENGTHS))]


def draw_votes(count, seed, strengths=TRUE_STRENGTHS):
    """Votes a user would cast if the contenders had these strengths: 2 to 4 columns, now and then a tie or "both
    bad", else a winner drawn with odds exp(theta) (Luce's choice rule: Bradley–Terry when there are two)."""
    draws = np.random.default_rng(seed)
    votes = []
    for _ in range(count):
        columns = draws.choice(len(strengths), size=draws.integers(2, 5), replace=False)
        labels = tuple(LABELS[k] for k in columns)
        outcome = draws.choice([Outcome.WIN] * 8 + [Outcome.TIE, Outcome.BOTH_BAD])
        if outcome != Outcome.WIN:
            votes.append(Vote(labels, Outcome(outcome)))
            continue
        odds = np.exp([strengths[k] for k in columns])
        votes.append(Vote(labels, Outcome.WIN, int(draws.choice(len(columns), p=odds / odds.sum()))))
    return votes


def as_indices(votes):
    index = {label: k for k, label in enumerate(LABELS)}
    return [(index[a], index[b], score) for a, b, score in pairwise(votes)]


def as_choix_data(triples):
    """The same comparisons for choix, which counts only whole wins: a win as two (winner, loser) comparisons, a tie
    as one each way. That doubles our log-likelihood, so choix's penalty alpha * sum(theta**2) must be twice ours
    (prior/2 * sum(theta**2)): alpha = prior."""
    data = []
    for a, b, score in triples:
        data += [(a, b)] * round(2 * score) + [(b, a)] * round(2 * (1 - score))
    return data


def by_label(board):
    return {rating.label: rating for rating in board}


@pytest.mark.parametrize("prior", [PRIOR, 1.0, 0.01])
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_agrees_with_choix(prior, seed):
    triples = as_indices(draw_votes(150, seed))
    reference = choix.opt_pairwise(len(LABELS), as_choix_data(triples), alpha=prior, method="Newton-CG", tol=1e-12)
    # choix doesn't centre theta; with a prior the maximum is centred anyway, so the two agree as they are
    assert fit(triples, len(LABELS), prior) == pytest.approx(reference, abs=1e-6)


def as_pairs(votes):
    index = {"A": 0, "B": 1}
    return [(index[a], index[b], score) for a, b, score in pairwise(votes)]


def test_three_wins_in_four_is_ln3_apart():
    votes = [Vote(("A", "B"), Outcome.WIN, 0)] * 3 + [Vote(("B", "A"), Outcome.WIN, 0)]
    assert float(fit(as_pairs(votes), 2, prior=0.0) @ [1, -1]) == pytest.approx(math.log(3), abs=1e-9)
    board = by_label(ratings(votes, rounds=20, prior=0.0))
    assert board["A"].rating - board["B"].rating == pytest.approx(400 * math.log10(3), abs=1e-6)  # ≈ 190.8 points
    assert (board["A"].rating + board["B"].rating) / 2 == pytest.approx(1000)  # the average contender is at 1000


@pytest.mark.parametrize(
    "vote, pairs",
    [
        pytest.param(Vote(("A", "B", "C", "D"), Outcome.WIN, 2), [("C", "A", 1.0), ("C", "B", 1.0), ("C", "D", 1.0)],
                     id="win-among-four-beats-three"),
        pytest.param(Vote(("A", "B"), Outcome.WIN, 1), [("B", "A", 1.0)], id="win-of-the-second-column"),
        pytest.param(Vote(("A", "B", "C"), Outcome.TIE), [("A", "B", 0.5), ("A", "C", 0.5), ("B", "C", 0.5)],
                     id="tie-ties-every-pair"),
        pytest.param(Vote(("A", "B"), Outcome.BOTH_BAD), [("A", "B", 0.5)], id="both-bad-is-a-tie"),
        pytest.param(Vote(("A", "A", "B"), Outcome.WIN, 0), [("A", "B", 1.0)], id="same-label-twice-no-pair"),
        pytest.param(Vote(("A", "A"), Outcome.TIE), [], id="same-label-tie-says-nothing"),
    ],
)
def test_pairwise(vote, pairs):
    assert pairwise([vote]) == pairs


@pytest.mark.parametrize("vote", [Vote(("A", "B"), Outcome.TIE), Vote(("A", "B"), Outcome.BOTH_BAD)])
def test_symmetric_ties_rate_equal(vote):
    a, b = ratings([vote] * 4, rounds=50)
    assert a.rating == pytest.approx(b.rating) == pytest.approx(1000)
    assert (a.low, a.high) == pytest.approx((b.low, b.high))


def test_a_win_among_four_puts_the_winner_first_and_the_others_level():
    winner, *others = ratings([Vote(("A", "B", "C", "D"), Outcome.WIN, 2)], rounds=50)
    assert (winner.label, winner.votes, winner.wins) == ("C", 1, 1)
    assert [rating.rating for rating in others] == pytest.approx([others[0].rating] * 3)
    assert all(rating.rating < winner.rating and (rating.votes, rating.wins) == (1, 0) for rating in others)


def test_counts_votes_and_wins():
    votes = [Vote(("A", "B"), Outcome.WIN, 0), Vote(("A", "C", "B"), Outcome.WIN, 1), Vote(("B", "C"), Outcome.TIE)]
    board = by_label(ratings(votes, rounds=20))
    assert {label: (r.votes, r.wins) for label, r in board.items()} == {"A": (2, 1), "B": (3, 0), "C": (2, 1)}


def test_no_votes_no_ratings():
    assert ratings([]) == []


def test_a_win_needs_a_winner_and_only_a_win_has_one():
    for bad in [dict(outcome=Outcome.WIN), dict(outcome=Outcome.TIE, winner=0), dict(outcome=Outcome.WIN, winner=2)]:
        with pytest.raises(ValueError):
            Vote(("A", "B"), **bad)


def split_votes(a_wins, b_wins):
    return [Vote(("A", "B"), Outcome.WIN, 0)] * a_wins + [Vote(("A", "B"), Outcome.WIN, 1)] * b_wins


def test_intervals_hold_the_rating_and_narrow_with_more_votes():
    few, many = ratings(split_votes(6, 4)), ratings(split_votes(60, 40))
    for rating in few + many:
        assert rating.low <= rating.rating <= rating.high
    assert all(m.high - m.low < (f.high - f.low) / 2 for f, m in zip(few, many))


def test_intervals_are_the_same_for_a_seed():
    votes = draw_votes(60, seed=3)
    assert ratings(votes, rounds=100, seed=7) == ratings(votes, rounds=100, seed=7)
    assert ratings(votes, rounds=100, seed=7) != ratings(votes, rounds=100, seed=8)  # the seed is used


def test_a_contender_that_won_every_vote_has_a_finite_rating():
    votes = [Vote(("A", "B"), Outcome.WIN, 0)] * 5 + [Vote(("B", "C"), Outcome.TIE)] * 2
    best = ratings(votes)[0]
    assert best.label == "A"
    assert all(math.isfinite(value) for value in (best.rating, best.low, best.high))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_strengths_come_back_in_order(seed):
    board = ratings(draw_votes(400, seed), rounds=50)
    assert [rating.label for rating in board] == LABELS[::-1]  # the strongest (the last) first
