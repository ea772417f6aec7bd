#!/usr/bin/env python3
"""Traffic the autoscaler was not tuned on, as trace files for `matte-sim`.

Each family is a shape of traffic no built-in scenario has (or has only in part),
drawn from a seed: the same family and seed give the same arrivals on every machine
(`random.Random` seeded with a string). A trace is one arrival time in seconds per
line, sorted, after a comment naming what it is. `--write` lays out every family's
traces as `matte-sim --every-family` reads them, DIR/FAMILY/SEED.txt, in a folder
that is new or empty (a trace left from an earlier write would count as a seed).

    simulator/held-out/traces.py FAMILY SEED > trace.txt
    simulator/held-out/traces.py --list
    simulator/held-out/traces.py --write DIR [--seed FIRST] [--seeds N] [FAMILY ...]
    matte-sim --every-family DIR --routing gateway
"""

import argparse
import math
import random
import sys
from pathlib import Path


def poisson(rng, rate, start, end):
    """Poisson arrivals at `rate` per second from `start` to `end`."""
    arrivals, time = [], start
    while True:
        time += rng.expovariate(rate)
        if time >= end:
            return arrivals
        arrivals.append(time)


def at_random(rng, mean_gap, end):
    """Moments ~`mean_gap` apart (exponential gaps) up to `end`, the first within the
    first `mean_gap`, so that no trace is empty."""
    times, time = [], rng.uniform(0, mean_gap)
    while time < end:
        times.append(time)
        time += rng.expovariate(1 / mean_gap)
    return times


def events(rng, mean_gap, end, draw):
    """The arrivals `draw(t)` gives at each of the moments `at_random` picks."""
    return [arrival for time in at_random(rng, mean_gap, end) for arrival in draw(time)]


def varying_poisson(rng, rate_at, peak, end):
    """Poisson arrivals whose rate at each moment is `rate_at(t)` <= `peak`, by thinning."""
    return [time for time in poisson(rng, peak, 0.0, end) if rng.random() < rate_at(time) / peak]


def burst(rng, start, images, spread):
    """`images` arrivals spread uniformly over `spread` seconds from `start`."""
    return [start + rng.random() * spread for _ in range(max(1, int(images)))]


def lognormal(rng, median, sigma):
    return rng.lognormvariate(math.log(median), sigma)


def fast_clock(rng):
    arrivals, time = [], 30.0
    while time < 3600:
        arrivals += burst(rng, time, lognormal(rng, 50, 0.3), 2)
        time += 60
    return arrivals


def small_frequent(rng):
    return events(rng, 30, 3600, lambda time: burst(rng, time, rng.randint(10, 30), 1))


def sessions(rng):
    arrivals, time = [], 100.0
    while time < 7200:
        for _ in range(5):
            arrivals += burst(rng, time, lognormal(rng, 80, 0.4), 3)
            time += rng.uniform(60, 90)
        time += rng.uniform(1200, 1800)
    return arrivals


def long_batch(rng):
    return poisson(rng, 0.2, 0, 3600) + burst(rng, rng.uniform(600, 1800), 3000, 480)


def retail(rng):
    def rate_at(time):
        return 2.25 + 1.75 * math.sin(2 * math.pi * time / 3600)

    steady = varying_poisson(rng, rate_at, 4.0, 3600)
    return steady + events(rng, 600, 3600, lambda time: burst(rng, time, lognormal(rng, 150, 0.5), 3))


def sawtooth(rng):
    return varying_poisson(rng, lambda time: 8.0 * (time % 600) / 600, 8.0, 3600)


def pairs(rng):
    def pair(time):
        first = burst(rng, time, lognormal(rng, 100, 0.4), 3)
        return first + burst(rng, time + rng.uniform(20, 40), lognormal(rng, 100, 0.4), 3)

    return events(rng, 240, 3600, pair)


def storms(rng):
    arrivals = []
    for start in (200.0, 2000.0):
        time = start
        for _ in range(20):
            arrivals += burst(rng, time, lognormal(rng, 50, 0.3), 2)
            time += rng.expovariate(1 / 30)
    return arrivals


def heavy_steady(rng):
    steady = varying_poisson(rng, lambda t: 12 + 4 * math.sin(2 * math.pi * t / 900), 16.0, 3600)
    return steady + events(rng, 400, 3600, lambda time: burst(rng, time, lognormal(rng, 300, 0.3), 5))


def doubling(rng):
    arrivals, time, size = [], 60.0, 25
    while time < 3600:
        arrivals += burst(rng, time, size, 3)
        time, size = time + 600, size * 2
    return arrivals


def cron_on_a_day(rng):
    day = 7200.0
    arrivals = varying_poisson(rng, lambda t: 1.75 - 1.25 * math.cos(2 * math.pi * t / day), 3.0, day)
    time = rng.uniform(0, 600)
    while time < day:
        arrivals += burst(rng, time + rng.uniform(-10, 10), lognormal(rng, 200, 0.3), 5)
        time += 600
    return arrivals


def two_pipelines(rng):
    arrivals = []
    for period in (480.0, 660.0):
        time = rng.uniform(0, period)
        while time < 7200:
            arrivals += poisson(rng, 3.0, time, min(time + 240, 7200))
            time += period
    return arrivals


def slow_batches(rng):
    return events(rng, 900, 7200, lambda time: poisson(rng, 3.0, time, time + 200))


def burst_then_flow(rng):
    return events(
        rng, 1200, 7200, lambda time: burst(rng, time, lognormal(rng, 300, 0.3), 3) + poisson(rng, 4.0, time + 3, time + 183)
    )


def rush_hours(rng):
    arrivals = []
    for start in (rng.uniform(1500, 2100), rng.uniform(5000, 5600)):
        arrivals += poisson(rng, 8.0, start, start + 600)
    return arrivals


def wide_sizes(rng):
    return events(rng, 180, 3600, lambda time: burst(rng, time, lognormal(rng, 80, 1.0), 3))


# name: (what it is, how it is drawn)
FAMILIES = {
    "fast-clock": ("~50 images (log-normal, sigma 0.3) within 2 s every 60 s, for an hour", fast_clock),
    "small-frequent": ("10-30 images within 1 s, ~30 s apart (exponential gaps), for an hour", small_frequent),
    "sessions": ("sessions of five ~80-image bursts 60-90 s apart, 20-30 min of quiet between them, for two hours", sessions),
    "long-batch": ("0.2 images/s, and once a 3,000-image batch over 8 minutes", long_batch),
    "retail": ("0.5-4 images/s rising and falling over the hour, and ~150-image spikes ~10 min apart", retail),
    "sawtooth": ("a rate climbing from 0 to 8 images/s over 10 minutes, then dropping to 0, six times", sawtooth),
    "pairs": ("bursts of ~100 images in pairs 20-40 s apart, the pairs ~4 minutes apart", pairs),
    "storms": ("twice, 20 bursts of ~50 images ~30 s apart, then quiet", storms),
    "heavy-steady": ("8-16 images/s rising and falling every 15 minutes, and ~300-image bursts ~400 s apart", heavy_steady),
    "doubling": ("a burst every 10 minutes, each twice the last: 25, 50, ... 800 images", doubling),
    "cron-on-a-day": ("a ~200-image job every 10 min (+-10 s) on traffic rising from 0.5 to 3 images/s and back over two hours", cron_on_a_day),
    "two-pipelines": ("two flows of 3 images/s, on for 4 minutes every 8 and every 11 minutes, for two hours", two_pipelines),
    "slow-batches": ("600-image batches arriving at 3 images/s, ~15 minutes apart, for two hours", slow_batches),
    "burst-then-flow": ("a ~300-image burst, then 4 images/s for 3 minutes, ~20 minutes apart, for two hours", burst_then_flow),
    "rush-hours": ("twice, 8 images/s for 10 minutes after half an hour of nothing", rush_hours),
    "wide-sizes": ("bursts of widely spread sizes (log-normal, median 80, sigma 1.0) within 3 s, ~3 minutes apart", wide_sizes),
}


def trace(family, seed):
    """The sorted arrivals of `family` drawn from `seed`."""
    _, draw = FAMILIES[family]
    return sorted(draw(random.Random(f"{family}/{seed}")))


def text(family, seed):
    """The trace file of `family` drawn from `seed`: what it is, then one arrival a line."""
    lines = [f"# {family}, seed {seed}: {FAMILIES[family][0]}"] + [f"{time:.3f}" for time in trace(family, seed)]
    return "\n".join(lines) + "\n"


def write(folder, families, seeds):
    """Every family's traces of `seeds` under `folder`, one folder a family."""
    for family in families:
        (folder / family).mkdir(parents=True)
        for seed in seeds:
            (folder / family / f"{seed}.txt").write_text(text(family, seed))


def main(args):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="name and describe every family")
    parser.add_argument("--write", metavar="DIR", type=Path, help="write every family's traces under DIR")
    parser.add_argument("--seed", type=int, default=1, help="with --write: the first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=12, help="with --write: how many seeds a family (default 12)")
    parser.add_argument("trace", nargs="*", help="FAMILY SEED: print one trace; with --write, the families to write")
    options = parser.parse_args(args)
    if options.list:
        for name, (what, _) in FAMILIES.items():
            print(f"{name}: {what}")
        return 0
    # With --write every name is a family; without, the first is and the second a seed.
    families = options.trace if options.write is not None else options.trace[:1]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)} (families: {', '.join(FAMILIES)})")
    if options.write is not None:
        if options.seeds < 1 or options.seed < 0:
            parser.error("--seed must be at least 0 and --seeds at least 1")
        if options.write.exists() and any(options.write.iterdir()):
            parser.error(f"{options.write} is not empty: write the traces into a new folder")
        write(options.write, options.trace or list(FAMILIES), range(options.seed, options.seed + options.seeds))
        return 0
    if len(options.trace) != 2 or not options.trace[1].isdigit():
        parser.error("print one trace with FAMILY SEED, or write many with --write DIR")
    sys.stdout.write(text(options.trace[0], int(options.trace[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
