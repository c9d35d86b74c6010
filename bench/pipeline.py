"""Question: what does `minicompress run` (default recipe, bundled digits) deliver, and how fast?

Runs the whole pipeline once (teacher -> KD student -> pruned -> int8), prints the stage table with
speed-up and compression ratios against the teacher (measured side by side in this run), and one
JSON line. Usage: python bench/pipeline.py [--recipe FILE] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from minicompress.pipeline import format_table, run
from minicompress.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe")
    parser.add_argument("--out")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="minicompress-bench-")
    start = time.perf_counter()
    report = run(load_recipe(args.recipe), out, quiet=True, log=lambda _: None)
    seconds = time.perf_counter() - start
    print(format_table(report["stages"]))
    teacher, final = report["stages"][0], report["stages"][-1]
    print(f"\nwall time {seconds:.1f} s; final vs teacher: accuracy {100 * (final['accuracy'] - teacher['accuracy']):+.2f} "
          f"points, {final['compression_vs_teacher']:.1f}x smaller on disk, {final['speedup_vs_teacher']:.2f}x faster per sample")
    print(json.dumps({"bench": "pipeline", "seconds": seconds,
                      "stages": [{k: r[k] for k in ("stage", "accuracy", "bytes_on_disk", "latency_ms_per_sample",
                                                    "speedup_vs_teacher", "compression_vs_teacher")}
                                 for r in report["stages"]]}))


if __name__ == "__main__":
    main()
