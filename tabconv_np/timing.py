"""Timing several contenders fairly: interleaved (round-robin) samples, medians.

Used by ``tabconv compare`` (a converted network against the exact one, in the
same process) and by the benchmarks in ``bench/``.  Each contender is warmed
up, its number of calls per sample set so that a sample lasts at least
``min_sample`` seconds, then ``repeats`` rounds take one sample of every
contender in turn, the first contender rotating from round to round, so that
a slow drift of the machine (another process, the clock) reaches all of them
alike.
"""
import statistics
import time

import numpy as np


def time_round_robin(fns, repeats, warmup, min_sample, pause):
    """Per contender: median, min and all samples (seconds per call) of round-robin rounds.

    Warm-up, calibration to ``min_sample``, then
    ``repeats`` rounds, each taking one sample of every contender in turn
    (the first contender rotating), after ``pause`` seconds and one untimed call.
    """
    def sample(fn, n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    names = list(fns)
    loops = {}
    for n in names:
        for _ in range(warmup):
            fns[n]()
        one = max(sample(fns[n], 1), 1e-7)
        loops[n] = max(1, int(np.ceil(min_sample / one)))
    samples = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if pause:
                time.sleep(pause)
            fns[n]()                                  # untimed: wakes this contender's threads
            samples[n].append(sample(fns[n], loops[n]))
    return {n: {"median": statistics.median(samples[n]), "min": min(samples[n]),
                "samples": samples[n], "loops": loops[n]} for n in names}
