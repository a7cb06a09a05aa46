"""Evaluate the latest (or named) test render of a workspace and write its report.

    python scripts/evaluate.py W [--data DATA] [--name NAME] [--no-baseline]

Writes ``W/results/metrics.json`` (merged), ``W/results/report.md`` (``<name>_report.md`` for a
new-audio render) and
``W/results/<name>_strip.png``; prints the summary as JSON. Bad input ends with one
``error:`` line and exit code 2. See ``nerf_triplane/evaluation.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", help="workspace folder holding results/")
    parser.add_argument("--data", default=None, help="training folder (default: the one recorded by the render)")
    parser.add_argument("--name", default=None, help="render name, e.g. ngp_ep0010 (default: the latest)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the nearest-training-frame floors")
    parser.add_argument("--lpips_weights", default=None, help="AlexNet weights file for LPIPS")
    args = parser.parse_args(argv)

    from nerf_triplane.evaluation import evaluate_workspace
    from nerf_triplane.json_output import print_result

    def compute() -> dict:
        result = evaluate_workspace(args.workspace, data=args.data, name=args.name, baseline=args.baseline,
                                    lpips_weights=args.lpips_weights)
        summary = {k: result[k] for k in ("name", "frames", "metrics", "sync", "sync_gt", "baseline", "baseline_head",
                                         "jitter", "paths")}
        for key in ("sync", "sync_gt"):
            if summary[key]:
                # The per-lag list is in metrics.json; the summary stays readable.
                summary[key] = {k: v for k, v in summary[key].items() if k != "corr"}
        return summary

    return print_result(compute)


if __name__ == "__main__":
    sys.exit(main())
