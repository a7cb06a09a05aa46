"""Ahead-of-time build of the kernel packages: ``pip install --no-build-isolation -e .``.

For each of gridencoder, shencoder and raymarching this builds ``PKG._cpp`` (C++ CPU
kernels) always and ``PKG._cuda`` when nvcc is found and ``ERNERF_NO_CUDA`` is not
set (arch list: ``$TORCH_CUDA_ARCH_LIST`` or 7.5;8.0;8.6;8.9;9.0+PTX). Sources and
flags come from ``ext_common/build.py``, shared with the JIT loader; each module
carries the hash of its sources, so after a ``git pull`` the loader ignores a stale
one (and says so) until this is run again. Without this step the packages compile
themselves on first use into a cache outside the checkout.
"""
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ext_common import build  # noqa: E402

if build.cuda_wanted():
    # torch.utils.cpp_extension reads both when it is first imported (below), and
    # cannot find the toolkit itself behind an nvcc wrapper script.
    os.environ.setdefault("CUDA_HOME", str(build.cuda_home()))
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", build.DEFAULT_CUDA_ARCHS)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def extensions():
    rel = lambda p: os.path.relpath(p, build.ROOT)  # noqa: E731
    exts = []
    for pkg in build.PACKAGES:
        if build.sources(pkg, "cpp"):
            define = build.hash_define(build.source_hash(pkg, "cpp"))
            exts.append(CppExtension(
                f"{pkg}._cpp", [rel(s) for s in build.sources(pkg, "cpp")],
                include_dirs=build.include_dirs(pkg),
                extra_compile_args={"cxx": build.compile_flags("cpp") + [define]},
                extra_link_args=build.ld_flags("cpp")))
        if build.cuda_wanted() and build.sources(pkg, "cuda"):
            define = build.hash_define(build.source_hash(pkg, "cuda"))
            exts.append(CUDAExtension(
                f"{pkg}._cuda", [rel(s) for s in build.sources(pkg, "cuda")],
                include_dirs=build.include_dirs(pkg),
                library_dirs=build.cuda_library_dirs(),
                extra_compile_args={"cxx": build.compile_flags("cuda") + [define],
                                    "nvcc": build.nvcc_flags() + [define]},
                extra_link_args=build.ld_flags("cuda")))
    return exts


setup(
    name="ernerf",
    version="0.1.0",
    description="ER-NeRF talking-portrait synthesis with CUDA, C++ CPU and torch backends",
    packages=find_packages(include=["ext_common", "gridencoder", "shencoder", "raymarching",
                                    "nerf_triplane", "data_utils"]),
    package_data={"ext_common": ["include/*.h"], "gridencoder": ["src/*"], "shencoder": ["src/*"],
                  "raymarching": ["src/*"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
)
