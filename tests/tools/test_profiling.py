"""Round-robin timing helpers: call order, one time per call, per-round ratios."""

import torch

from gcnet.tools.profiling import compare_times, ratio_stats, round_robin


def test_round_robin_interleaves_and_times_every_call():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = round_robin(fns, rounds=3, warmup=1)
    # one warm-up round, then three timed rounds, interleaved, the order rotating each round
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    assert set(compare_times(fns, 2, 0)) == {"a", "b", "c"}


def test_ratio_stats_takes_ratios_within_rounds():
    # round 2 is slow for both (load on the machine): the per-round ratio stays 2.0
    times = {"base": [10.0, 10.0, 100.0], "x": [20.0, 20.0, 200.0]}
    assert ratio_stats(times, "x", "base") == (2.0, 2.0, 2.0)
    times = {"base": [10.0, 10.0, 10.0, 10.0], "x": [11.0, 12.0, 13.0, 30.0]}
    med, lo, hi = ratio_stats(times, "x", "base")
    assert (med, lo, hi) == (1.25, 1.1, 3.0)


def test_round_robin_shuffle_varies_the_predecessor():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abcd"}
    times = round_robin(fns, rounds=20, warmup=0, shuffle=True)
    rounds = ["".join(calls[i : i + 4]) for i in range(0, 80, 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)  # each once per round
    before_a = {r[r.index("a") - 1] for r in rounds if r.index("a") > 0}
    assert len(before_a) > 1  # not one fixed neighbour, as the rotation gives
    assert {k: len(v) for k, v in times.items()} == dict.fromkeys("abcd", 20)


def test_load_baseline_block_from_git():
    from gcnet.tools.profiling import load_baseline_block

    cls = load_baseline_block("git:HEAD")
    assert cls.__name__ == "GlobalContextBlock"
    assert cls(16, 1 / 4)(torch.randn(1, 16, 3, 3)).shape == (1, 16, 3, 3)
