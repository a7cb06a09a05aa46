"""Build the kernel backends ahead of use: ``python -m ext_common build [--cuda] [--archs 8.0;9.0]``.

Builds the ``cpp`` and ``cuda_emu`` backends of every package (and ``cuda`` with
``--cuda``) into the JIT cache (``ext_common.build.cache_root()``), keyed on their
sources, so repeated runs and fresh clones of unchanged sources are instant.
"""
import argparse
import sys
import time

from . import build


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ext_common")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the C++ and emulated-CUDA (and optionally CUDA) backends into the cache")
    b.add_argument("--cuda", action="store_true", help="also compile and link the CUDA sources with nvcc")
    b.add_argument("--archs", default=None,
                   help="CUDA arch list, e.g. '8.0;9.0+PTX' (default: $TORCH_CUDA_ARCH_LIST, else the GPUs present, "
                        f"else {build.DEFAULT_CUDA_ARCHS})")
    b.add_argument("packages", nargs="*", default=list(build.PACKAGES))
    args = p.parse_args(argv)
    kinds = ["cpp", "cuda_emu"] + (["cuda"] if args.cuda else [])
    if args.cuda and build.nvcc_path() is None:
        print("nvcc not found: skipping the CUDA build", file=sys.stderr)
        kinds.remove("cuda")
    for pkg in args.packages:
        for kind in kinds:
            if not build.sources(pkg, kind):
                print(f"{pkg}: no {kind} sources, skipped")
                continue
            t = time.time()
            try:
                build.jit_build(pkg, kind, archs=args.archs)
            except build.BuildError as e:
                print(f"{pkg}: {e}", file=sys.stderr)
                return 1
            print(f"{pkg}: {kind} backend ready ({time.time() - t:.1f} s, {build.build_key(pkg, kind, args.archs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
