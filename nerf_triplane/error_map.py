"""Error-map ray sampling (``--error_map SHARE``): draw rays where the recent loss is high.

Each training image has a coarse map of ``CELLS x CELLS`` cells holding its recent per-ray
colour error (squared, mean over RGB). A ``SHARE`` of each batch's rays picks cells in
proportion to that map and a uniform pixel inside the cell; the other rays are drawn as
without the option (uniform, plus the ``--face_rays``/``--lips_rays`` parts), so every pixel
keeps a chance. After the step the batch's errors update the cells they hit.

With many frames and few steps an image is seen only a few times (french.mp4: 1146 training
frames, 2000 steps), so its own map would mostly be empty. A cell the image has not measured
yet falls back to a running map over all images (the cell's error averaged over every batch
that hit it): hard regions of the subject (hair silhouette, mouth) are found from the other
frames. The maps live in the training dataset and are not checkpointed: a resumed run starts
from uniform maps, which refill within a few steps, so with this option resuming is not
bit-exact (it is without it).
"""
from __future__ import annotations

import torch

CELLS = 32  # cells per image side: 16 px cells at 512², fine enough for the mouth and the brows
IMAGE_DECAY = 0.5  # weight of a new measurement in an image's own cell (images are seen rarely)
SHARED_DECAY = 0.05  # weight of a new measurement in the all-images cell (hit on every step)


class ErrorMap:
    """Per-image coarse maps of recent colour error, and sampling from them.

    Args:
        n_images: number of training images N.
        H, W: image size in pixels.
        device: where the maps and the drawn pixels live.
    Attributes:
        maps: recent error per image and cell  # [N, CELLS*CELLS] float32
        seen: whether the image has measured the cell  # [N, CELLS*CELLS] bool
        shared: running error per cell over all images (1 before the first hit)  # [CELLS*CELLS]
        shared_seen: whether any batch has hit the cell  # [CELLS*CELLS] bool
    """

    def __init__(self, n_images: int, H: int, W: int, device="cpu"):
        if H < CELLS or W < CELLS:
            raise ValueError(f"--error_map needs images of at least {CELLS}x{CELLS} pixels, got {H}x{W}")
        self.H, self.W = int(H), int(W)
        self.device = torch.device(device)
        self.maps = torch.zeros(n_images, CELLS * CELLS, device=self.device)
        self.seen = torch.zeros(n_images, CELLS * CELLS, dtype=torch.bool, device=self.device)
        # A cell no batch has hit yet keeps weight 1, far above any measured colour error, so
        # the first batches explore every cell.
        self.shared = torch.ones(CELLS * CELLS, device=self.device)
        self.shared_seen = torch.zeros(CELLS * CELLS, dtype=torch.bool, device=self.device)
        # Pixel bounds of each cell row / column: [CELLS + 1] each, covering the image exactly.
        self._rows = torch.div(torch.arange(CELLS + 1, device=self.device) * self.H, CELLS, rounding_mode="floor")
        self._cols = torch.div(torch.arange(CELLS + 1, device=self.device) * self.W, CELLS, rounding_mode="floor")

    def weights(self, f: int) -> torch.Tensor:
        """Sampling weight of each cell of image ``f``: its own error where measured, else the
        all-images error  # [CELLS*CELLS]."""
        return torch.where(self.seen[f], self.maps[f], self.shared)

    def sample(self, f: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` flat pixel indices of image ``f``, cells drawn in proportion to ``weights(f)``,
        pixels uniform inside the cell  # [n] int64."""
        if n <= 0:
            raise ValueError(f"number of rays must be positive, got {n}")
        w = self.weights(f)
        # A map of zeros (a perfectly fitted image) cannot be sampled from: fall back to uniform.
        w = w if float(w.sum()) > 0 else torch.ones_like(w)
        cells = torch.multinomial(w, n, replacement=True, generator=generator)
        r, c = torch.div(cells, CELLS, rounding_mode="floor"), cells % CELLS
        r0, r1, c0, c1 = self._rows[r], self._rows[r + 1], self._cols[c], self._cols[c + 1]
        u = torch.rand(2, n, device=self.device, generator=generator)
        rows = r0 + (u[0] * (r1 - r0)).long()
        cols = c0 + (u[1] * (c1 - c0)).long()
        return rows * self.W + cols

    def cell_of(self, pixels: torch.Tensor) -> torch.Tensor:
        """Cell index of flat pixel indices  # [n] -> [n] int64."""
        rows, cols = torch.div(pixels, self.W, rounding_mode="floor"), pixels % self.W
        r = torch.div(rows * CELLS, self.H, rounding_mode="floor")
        c = torch.div(cols * CELLS, self.W, rounding_mode="floor")
        return r * CELLS + c

    @torch.no_grad()
    def record(self, f: int, pixels: torch.Tensor, error: torch.Tensor) -> None:
        """Fold one batch's per-ray errors into image ``f``'s map and the all-images map.

        Args:
            f: training image index.
            pixels: flat pixel indices of the batch's rays  # [n]
            error: their colour error (squared, mean over RGB)  # [n]
        """
        pixels = pixels.reshape(-1).to(self.device)
        error = error.reshape(-1).detach().float().to(self.device)
        if pixels.shape != error.shape:
            raise ValueError(f"record() needs one error per pixel, got {pixels.shape[0]} pixels and "
                             f"{error.shape[0]} errors")
        cells = self.cell_of(pixels)
        total = torch.zeros(CELLS * CELLS, device=self.device).index_add_(0, cells, error)
        count = torch.zeros(CELLS * CELLS, device=self.device).index_add_(0, cells, torch.ones_like(error))
        hit = count > 0
        mean = total[hit] / count[hit]
        own = self.maps[f, hit]
        self.maps[f, hit] = torch.where(self.seen[f, hit], (1 - IMAGE_DECAY) * own + IMAGE_DECAY * mean, mean)
        self.seen[f, hit] = True
        shared = self.shared[hit]
        self.shared[hit] = torch.where(self.shared_seen[hit], (1 - SHARED_DECAY) * shared + SHARED_DECAY * mean, mean)
        self.shared_seen[hit] = True
