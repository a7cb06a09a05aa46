"""Time the kernel packages' backends and print one JSON object.

    python scripts/bench_kernels.py [--quick] [--only gridencoder,shencoder,raymarching]
                                    [--device cpu|cuda] [--json PATH]

Each package's ``scripts/bench/<pkg>.py`` reports forward+backward timings of the torch
reference and of the native backend of ``--device`` (``cpu``: C++, ``cuda``: CUDA), both on
that device's tensors, and ``cpp_over_torch_speedup`` / ``cuda_over_torch_speedup``; a
package without a benchmark module is reported as skipped.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PACKAGES = ("gridencoder", "shencoder", "raymarching")


def machine() -> dict:
    info = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--only", default=",".join(PACKAGES), help="comma-separated packages to time")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: torch vs C++ on CPU tensors; cuda: torch vs CUDA on GPU tensors")
    p.add_argument("--json", default="", help="also write the JSON object to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(PACKAGES))
    if unknown:
        p.error(f"--only: unknown package(s) {unknown}; choose from {list(PACKAGES)}")
    report: dict = {}
    for pkg in wanted:
        if not (ROOT / "scripts" / "bench" / f"{pkg}.py").exists():
            report[pkg] = {"skipped": f"scripts/bench/{pkg}.py does not exist"}
            continue
        module = importlib.import_module(f"scripts.bench.{pkg}")
        report[pkg] = module.run(quick=args.quick, device=args.device)
    report["machine"] = machine()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
