"""Paired comparisons for the benches, on a machine whose speed drifts between rounds.

Each round measures a row right next to its peer (Nimbus next to HAProxy), so the per-round
ratio row/peer cancels most of the drift. Over the rounds, the median ratio is the estimate and
a distribution-free interval for that median (from the ratios' order statistics, which assumes
nothing about the noise's shape) says how sure it is: a goal like "p99 no worse than HAProxy's"
is measurably missed only when the whole interval lies on the wrong side of 1.00.

    python3 pairs.py pair "ROW VALUES" "PEER VALUES"                     # 1.06 [1.01, 1.12]
    python3 pairs.py goal "ROW VALUES" "PEER VALUES" at-least|at-most    # ... and the verdict
"""

import math
import sys

CONFIDENCE = 0.90


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratios(rows, peers):
    """The per-round ratios row/peer (rounds where the peer has no figure are left out)."""
    return [row / peer for row, peer in zip(rows, peers) if peer > 0]


def coverage(n, k):
    """How often [k-th smallest, k-th largest] of n samples holds their median: the chance
    that at least k samples fall on each side of it, when each falls either way at 1/2."""
    outside = sum(math.comb(n, i) for i in range(k)) / 2**n
    return 1 - 2 * outside


def median_interval(values, confidence=CONFIDENCE):
    """(low, high, coverage): the narrowest order-statistic interval for the median whose
    coverage is at least `confidence`; with too few values for that, the full range."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(n, k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(n, k)


def judge(low, high, goal):
    """The verdict on a ratio's interval for a goal of `at-least` or `at-most` 1.00."""
    if goal == "at-least":
        if high < 1:
            return "missed (measurably below 1.00)"
        return "met (measurably above 1.00)" if low > 1 else "met within noise (not measurably below)"
    if goal == "at-most":
        if low > 1:
            return "missed (measurably above 1.00)"
        return "met (measurably below 1.00)" if high < 1 else "met within noise (not measurably above)"
    raise ValueError(f"unknown goal {goal!r}: at-least or at-most")


def pair_line(rows, peers):
    """'1.06 [1.01, 1.12]': the median of the per-round ratios and its interval; '—' when no
    round has a pair."""
    paired = ratios(rows, peers)
    if not paired:
        return "—"
    low, high, _ = median_interval(paired)
    return f"{median(paired):.2f} [{low:.2f}, {high:.2f}]"


def goal_line(rows, peers, goal):
    """The pair line and the verdict on the goal: '1.06 [1.01, 1.12]: met (measurably above
    1.00)'; '—' when no round has a pair."""
    paired = ratios(rows, peers)
    if not paired:
        return "—"
    low, high, cover = median_interval(paired)
    if cover < CONFIDENCE:
        # Fewer than 5 rounds cannot give a 90% interval: no verdict on so little.
        return f"{pair_line(rows, peers)}: not judged ({len(paired)} rounds give only a {cover:.0%} interval)"
    return f"{pair_line(rows, peers)}: {judge(low, high, goal)}"


def _numbers(text):
    return [float(word) for word in text.split()]


USAGE = 'usage: pairs.py pair "ROW VALUES" "PEER VALUES" | goal "ROW" "PEER" at-least|at-most'

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "pair":
        print(pair_line(_numbers(sys.argv[2]), _numbers(sys.argv[3])))
    elif len(sys.argv) == 5 and sys.argv[1] == "goal":
        print(goal_line(_numbers(sys.argv[2]), _numbers(sys.argv[3]), sys.argv[4]))
    else:
        sys.exit(USAGE)
