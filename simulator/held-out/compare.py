#!/usr/bin/env python3
"""Matte against the HPA, KEDA and KPA on traffic it was not tuned on.

Draws each family of `traces.py` over a few seeds, runs `matte-sim --trace` on every
trace (behind the gateway unless `--routing` says otherwise), and holds Matte to the
bar `--every-scenario` holds it to: the best anchor's attainment (the share of images
answered within the SLO, a mean over the seeds), at fewer GPU-seconds than that anchor.

    cargo build --release -p matte-sim
    simulator/held-out/compare.py [--seed FIRST] [--seeds N] [--routing R] [--bin PATH]
                                  [FAMILY ...] [-- MATTE-SIM FLAGS]
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import traces

POLICIES = ["matte", "hpa", "keda", "kpa"]
ANCHORS = ["hpa", "keda", "kpa"]
FIGURES = {"sloAttainment": "slo", "gpuSeconds": "gpu", "podStarts": "starts", "addedNodeSeconds": "nodes"}


def run(binary, path, routing, extra):
    """Every policy's outcome on one trace, by policy."""
    command = [binary, "--trace", str(path), "--routing", routing, "--policy", *POLICIES, "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return {outcome["policy"]: outcome for outcome in report["outcomes"]}


def means(outcomes):
    """Each policy's mean figures over the seeds' outcomes."""
    return {
        policy: {name: sum(seed[policy][key] for seed in outcomes) / len(outcomes) for key, name in FIGURES.items()}
        for policy in POLICIES
    }


def row(figures):
    """One policy's means as the table shows them."""
    return f"{100 * figures['slo']:>7.2f} {figures['gpu']:>7.0f} {figures['starts']:>6.1f} {figures['nodes']:>7.0f}"


def best_anchor(figures):
    """The anchor with the highest mean attainment, of those level the one with the
    fewest GPU-seconds: `best_anchor` in `simulator/src/against_anchors.rs`."""
    return max(ANCHORS, key=lambda anchor: (figures[anchor]["slo"], -figures[anchor]["gpu"]))


def verdict(matte, anchor):
    """The bar, as `verdict` in `simulator/src/against_anchors.rs` sets it."""
    if matte["slo"] < anchor["slo"]:
        return "no: attainment"
    if matte["gpu"] >= anchor["gpu"]:
        return "no: GPU-s"
    return "met"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help="families to run (all by default)")
    parser.add_argument("--seed", type=int, default=1, help="the first seed of each family (default 1)")
    parser.add_argument("--seeds", type=int, default=12, help="how many seeds of each family (default 12)")
    parser.add_argument("--routing", default="gateway", help="matte-sim's --routing (default gateway)")
    built = Path(__file__).resolve().parents[2] / "target" / "release" / "matte-sim"
    parser.add_argument("--bin", default=str(built), help="the matte-sim binary (default: the workspace's release build)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]
    families = args.families or list(traces.FAMILIES)
    unknown = [family for family in families if family not in traces.FAMILIES]
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)} (see traces.py --list)")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if not os.access(args.bin, os.X_OK):
        parser.error(f"{args.bin} is not an executable: cargo build --release -p matte-sim")

    seeds = range(args.seed, args.seed + args.seeds)
    with tempfile.TemporaryDirectory() as folder:
        jobs = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for family in families:
                for seed in seeds:
                    path = Path(folder) / f"{family}-{seed}.txt"
                    path.write_text(traces.text(family, seed))
                    jobs[(family, seed)] = pool.submit(run, args.bin, path, args.routing, extra)
            try:
                outcomes = {key: job.result() for key, job in jobs.items()}
            except RuntimeError as failure:
                print(f"matte-sim failed: {failure}", file=sys.stderr)
                return 1

    columns = f"{'SLO %':>7} {'GPU-s':>7} {'starts':>6} {'node-s':>7}"
    header = f"{'family':<16} {'matte':<5} {columns}  {'best anchor':<11} {columns}  bar"
    print(header)
    met = 0
    for family in families:
        figures = means([outcomes[(family, seed)] for seed in seeds])
        matte = figures["matte"]
        best = best_anchor(figures)
        anchor = figures[best]
        bar = verdict(matte, anchor)
        met += bar == "met"
        print(f"{family:<16} {'':<5} {row(matte)}  {best:<11} {row(anchor)}  {bar}")
    print(f"\nthe bar: at least the best anchor's SLO attainment, at fewer GPU-seconds; met on {met} of {len(families)}.")
    print(f"means over seeds {seeds[0]}-{seeds[-1]} of each family, routing {args.routing}, with burst-train's pods;")
    print("node-s: GPU-seconds of the nodes added on demand, launch to removal, idle included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
