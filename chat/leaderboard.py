"""Which contender answers better: a leaderboard of blind side-by-side votes, rated with a Bradley–Terry model.

A vote shows 2 to 4 answers, their makers hidden (a contender is what a column's label names: model · skill ·
settings); the user picks the best, calls a tie, or says all are bad. `pairwise` turns votes into pairwise scores,
`fit` finds each contender's log-strength theta (a beats b with probability 1 / (1 + exp(theta_b - theta_a))), and
`ratings` puts theta on an Elo-like scale with a bootstrap interval that resamples whole votes, not pairs: the
pairs of one vote were judged together, so they are not independent.

>>> [r.label for r in ratings([Vote(("A", "B"), Outcome.WIN, 0), Vote(("A", "B", "C"), Outcome.TIE)])]
['A', 'C', 'B']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from .compare import Outcome, Vote

# The Gaussian prior's precision on theta (a standard deviation of ~3.2, about 550 points). Without it a contender
# that won every vote would get an infinite rating; this weak a pull hardly moves one that has also lost.
PRIOR = 0.1
BASE = 1000.0  # the rating of an average contender (theta 0)
SCALE = 400 / math.log(10)  # points per unit of theta: 400 points apart is ten-to-one odds, as in chess
INTERVAL = (2.5, 97.5)  # the bootstrap percentiles that bound a rating's 95% interval
NEWTON_STEPS = 100  # the fit converges in about ten; the cap ends a fit that has no maximum (prior 0)
TOLERANCE = 1e-10  # converged: the last Newton step lowers the loss less than this, too little to measure
Array = NDArray[np.float64]


@dataclass(frozen=True)
class Rating:
    """A contender's place on the leaderboard."""

    label: str
    rating: float  # Elo-like: BASE + SCALE * theta (theta: BT log-strength, mean 0 across contenders)
    low: float  # the bootstrap 95% interval (2.5th and 97.5th percentiles), on the same scale
    high: float
    votes: int  # votes this contender took part in
    wins: int  # votes it won (outcome WIN with it as winner)


@dataclass(frozen=True)
class _Pairs:
    """Pairwise scores: `first` scored `score` against `second`, `weight` times; `vote`: the vote it came from."""

    first: NDArray[np.intp]
    second: NDArray[np.intp]
    score: Array
    weight: Array
    vote: NDArray[np.intp]

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, float, int]]) -> _Pairs:
        table = np.array(rows, dtype=float).reshape(-1, 4)
        first, second, vote = (table[:, column].astype(np.intp) for column in (0, 1, 3))
        return cls(first, second, table[:, 2], np.ones(len(table)), vote)


def pairwise(votes: Iterable[Vote]) -> list[tuple[str, str, float]]:
    """Each vote as pairwise scores (a, b, score of a against b: 1 a win, 0.5 a tie). A WIN among N columns is the
    winner beating each of the N-1 others (who are not ranked among themselves); a TIE or BOTH_BAD ties every pair.
    Two columns with the same label say nothing about it, so they make no pair.

    >>> pairwise([Vote(("A", "B", "C"), Outcome.WIN, 1)])
    [('B', 'A', 1.0), ('B', 'C', 1.0)]
    """
    return [pair for vote in votes for pair in _pairs_of(vote)]


def _pairs_of(vote: Vote) -> list[tuple[str, str, float]]:
    labels = vote.contenders
    if vote.winner is not None:  # a WIN: `Vote` lets no other outcome have a winner
        best = labels[vote.winner]
        return [(best, other, 1.0) for other in labels if other != best]
    return [(a, b, 0.5) for k, a in enumerate(labels) for b in labels[k + 1:] if a != b]


def fit(pairs: Sequence[tuple[int, int, float]], n: int, prior: float = PRIOR) -> Array:
    """The log-strengths theta (mean 0) of contenders 0..n-1 that best explain `pairs` ((a, b, score of a against
    b)): the maximum of the Bradley–Terry log-likelihood, a tie counting as half a win each way, less
    prior/2 * sum(theta**2). With prior 0 a contender that never lost nor tied has no finite theta.

    >>> round(float(fit([(0, 1, 1.0)] * 3 + [(1, 0, 1.0)], 2, prior=0.0) @ [1, -1]), 6)  # ln 3: won 3 in 4
    1.098612
    """
    return _solve(_Pairs.of([(a, b, score, k) for k, (a, b, score) in enumerate(pairs)]), n, prior)


def _solve(pairs: _Pairs, n: int, prior: float) -> Array:
    # The likelihood sees only differences of theta: adding the projection onto the all-ones direction to the Hessian
    # keeps theta centred and prior 0 solvable (a prior > 0 centres the maximum anyway; the steps stay Newton's own).
    gauge = np.full((n, n), 1.0 / n)
    theta = np.zeros(n)
    for _ in range(NEWTON_STEPS):
        gradient, hessian = _derivatives(pairs, theta, prior)
        step = np.linalg.lstsq(hessian + gauge, -gradient, rcond=None)[0]
        slope = float(gradient @ step)  # the loss's rate of change along the step
        if -slope < TOLERANCE:
            theta = theta + step
            break
        theta = _line_search(pairs, theta, step, slope, prior)
    return theta - theta.mean()


def _loss(pairs: _Pairs, theta: Array, prior: float) -> float:
    """The negative penalized log-likelihood that `fit` minimizes."""
    ahead = theta[pairs.first] - theta[pairs.second]
    misfit = pairs.score * np.logaddexp(0, -ahead) + (1 - pairs.score) * np.logaddexp(0, ahead)
    return float(pairs.weight @ misfit + prior / 2 * (theta @ theta))


def _derivatives(pairs: _Pairs, theta: Array, prior: float) -> tuple[Array, Array]:
    """The loss's gradient and Hessian at theta."""
    n = len(theta)
    expected = 1 / (1 + np.exp(theta[pairs.second] - theta[pairs.first]))  # P(first beats second)
    residual = pairs.weight * (expected - pairs.score)
    gradient = prior * theta + np.bincount(pairs.first, residual, n) - np.bincount(pairs.second, residual, n)
    curvature = pairs.weight * expected * (1 - expected)
    met = np.bincount(pairs.first * n + pairs.second, curvature, n * n).reshape(n, n)  # [a, b]: a's pairs with b
    return gradient, prior * np.eye(n) + np.diag(met.sum(0) + met.sum(1)) - met - met.T


def _line_search(pairs: _Pairs, theta: Array, step: Array, slope: float, prior: float) -> Array:
    """theta moved along `step`, halved until the loss falls enough (Armijo): a full step can overshoot and diverge."""
    start, size = _loss(pairs, theta, prior), 1.0
    while size > 1e-10 and _loss(pairs, theta + size * step, prior) > start + 1e-4 * size * slope:
        size /= 2
    return theta + size * step


def ratings(votes: Iterable[Vote], rounds: int = 500, seed: int = 0, prior: float = PRIOR) -> list[Rating]:
    """The leaderboard, best first: every contender of `votes` with its rating and a 95% interval from `rounds`
    refits to the votes resampled with replacement (drawn by `numpy.random.default_rng(seed)`: the same votes and
    seed give the same intervals). No votes, no ratings."""
    if rounds < 1:
        raise ValueError(f"the interval needs at least one bootstrap round, not {rounds}")
    votes = list(votes)
    labels = sorted({label for vote in votes for label in vote.contenders})
    if not labels:
        return []
    index = {label: k for k, label in enumerate(labels)}
    pairs = _Pairs.of([(index[a], index[b], score, k)
                       for k, vote in enumerate(votes) for a, b, score in _pairs_of(vote)])
    bounds = np.percentile(_bootstrap(pairs, len(votes), len(labels), rounds, seed, prior), INTERVAL, axis=0)
    rating, low, high = BASE + SCALE * np.vstack([_solve(pairs, len(labels), prior), *bounds])
    taking_part = Counter(label for vote in votes for label in set(vote.contenders))
    wins = Counter(vote.contenders[vote.winner] for vote in votes if vote.winner is not None)
    board = [Rating(label, float(rating[k]), float(low[k]), float(high[k]), taking_part[label], wins[label])
             for k, label in enumerate(labels)]
    return sorted(board, key=lambda rating: (-rating.rating, rating.label))


def _bootstrap(pairs: _Pairs, votes: int, n: int, rounds: int, seed: int, prior: float) -> Array:
    """theta refitted to `rounds` resamples of the votes, one row each: as many votes as there were, drawn with
    replacement (a vote drawn twice counts its pairs twice)."""
    draws = np.random.default_rng(seed)
    resamples = (np.bincount(draws.integers(votes, size=votes), minlength=votes) for _ in range(rounds))
    return np.array([_solve(replace(pairs, weight=copies[pairs.vote].astype(float)), n, prior) for copies in resamples])
