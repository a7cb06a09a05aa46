"""Occupancy-grid ray marching and volume compositing on CUDA, C++ CPU or pure torch.

See ``raymarching.raymarching`` for the training and inference loops, and
``raymarching.render`` for helpers that run them around a model callback.
"""
from .backend import BACKENDS, backend_name
from .raymarching import (CompositeResult, composite_rays, composite_rays_train, march_rays, march_rays_train,
                          morton3D, morton3D_dilation, morton3D_invert, near_far_from_aabb, packbits,
                          sph_from_ray)
from .render import render_inference, render_train

__all__ = ["BACKENDS", "backend_name", "CompositeResult", "composite_rays", "composite_rays_train", "march_rays",
           "march_rays_train", "morton3D", "morton3D_dilation", "morton3D_invert", "near_far_from_aabb",
           "packbits", "sph_from_ray", "render_inference", "render_train"]
