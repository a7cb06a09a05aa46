"""ER-NeRF tri-plane talking-portrait model: options, data provider, network, renderer.

Import the submodules directly (``from nerf_triplane.network import NeRFNetwork``);
this package file stays empty so that importing it is cheap.
"""
