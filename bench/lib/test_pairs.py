"""Table tests for the benches' paired statistics: python3 -m unittest discover -s bench/lib"""

import unittest

import pairs


class MedianTest(unittest.TestCase):
    def test_odd_and_even_counts(self):
        cases = [([3.0], 3.0), ([5.0, 1.0, 3.0], 3.0), ([4.0, 1.0, 3.0, 2.0], 2.5)]
        for values, want in cases:
            with self.subTest(values=values):
                self.assertEqual(pairs.median(values), want)

    def test_no_values_is_an_error(self):
        with self.assertRaises(ValueError):
            pairs.median([])


class RatiosTest(unittest.TestCase):
    def test_rounds_without_a_peer_figure_are_left_out(self):
        self.assertEqual(pairs.ratios([2.0, 3.0, 4.0], [1.0, 0.0, 2.0]), [2.0, 2.0])

    def test_pairs_stop_at_the_shorter_list(self):
        self.assertEqual(pairs.ratios([2.0, 3.0], [1.0]), [2.0])


class IntervalTest(unittest.TestCase):
    def test_coverage_of_order_statistics(self):
        # 1 - 2 * P(Binomial(n, 1/2) < k), the textbook values.
        cases = [(7, 1, 1 - 2 / 128), (7, 2, 1 - 16 / 128), (9, 2, 1 - 20 / 512), (11, 3, 1 - 134 / 2048)]
        for n, k, want in cases:
            with self.subTest(n=n, k=k):
                self.assertAlmostEqual(pairs.coverage(n, k), want)

    def test_narrowest_interval_with_enough_coverage(self):
        values = [float(v) for v in range(1, 12)]  # 1..11, shuffled order must not matter
        cases = [
            # n, want (low, high): 7 → k 1 (87.5% at k 2 is short of 90%); 9 → k 2; 11 → k 3
            (7, (1.0, 7.0)),
            (9, (2.0, 8.0)),
            (11, (3.0, 9.0)),
            # too few for 90% at all: the full range
            (3, (1.0, 3.0)),
            (1, (1.0, 1.0)),
        ]
        for n, want in cases:
            with self.subTest(n=n):
                low, high, cover = pairs.median_interval(list(reversed(values[:n])))
                self.assertEqual((low, high), want)
                if n >= 5:
                    self.assertGreaterEqual(cover, pairs.CONFIDENCE)


class JudgeTest(unittest.TestCase):
    def test_verdicts(self):
        cases = [
            (1.01, 1.20, "at-least", "met (measurably above 1.00)"),
            (0.95, 1.20, "at-least", "met within noise (not measurably below)"),
            (0.80, 0.99, "at-least", "missed (measurably below 1.00)"),
            (0.80, 0.99, "at-most", "met (measurably below 1.00)"),
            (0.80, 1.10, "at-most", "met within noise (not measurably above)"),
            (1.02, 1.10, "at-most", "missed (measurably above 1.00)"),
            # an interval touching 1.00 is not measurably on either side
            (1.00, 1.10, "at-most", "met within noise (not measurably above)"),
            (0.90, 1.00, "at-least", "met within noise (not measurably below)"),
        ]
        for low, high, goal, want in cases:
            with self.subTest(low=low, high=high, goal=goal):
                self.assertEqual(pairs.judge(low, high, goal), want)

    def test_unknown_goal_is_an_error(self):
        with self.assertRaises(ValueError):
            pairs.judge(0.9, 1.1, "about")

    def test_pair_line(self):
        self.assertEqual(pairs.pair_line([3.0, 1.0, 2.0, 5.0, 4.0], [2.0] * 5), "1.50 [0.50, 2.50]")
        self.assertEqual(pairs.pair_line([], []), "—")

    def test_goal_line(self):
        rows = [110.0, 104.0, 120.0, 99.0, 108.0, 111.0, 106.0, 115.0, 103.0]
        peers = [100.0] * 9
        self.assertEqual(
            pairs.goal_line(rows, peers, "at-least"), "1.08 [1.03, 1.15]: met (measurably above 1.00)"
        )
        self.assertEqual(pairs.goal_line([1.0], [0.0], "at-least"), "—")

    def test_too_few_rounds_get_no_verdict(self):
        cases = [
            ([1.0, 2.0, 3.0], "2.00 [1.00, 3.00]: not judged (3 rounds give only a 75% interval)"),
            ([1.5, 1.6], "1.55 [1.50, 1.60]: not judged (2 rounds give only a 50% interval)"),
        ]
        for rows, want in cases:
            with self.subTest(rows=rows):
                self.assertEqual(pairs.goal_line(rows, [1.0] * len(rows), "at-most"), want)


if __name__ == "__main__":
    unittest.main()
