"""Batched, seeded augmentation on the training device: one ``affine_grid`` + ``grid_sample`` per batch.

Each image's random affine (rotation, shift, shear, zoom, flips) and brightness are drawn
from its own generator, seeded by (run seed, epoch, cache row) -- the key
:class:`coronet.data.CachedXrays` hands out -- so what an image looks like in an epoch
does not depend on which batch, process or resumed run it lands in. The matrices for
the whole batch are then applied at once, on the GPU when training runs there, and the
output grid's size is the epoch's training resolution (progressive resizing costs nothing
extra). Mixup and CutMix draw from a generator seeded by (seed, step, rank).

Transforms follow Keras' ``ImageDataGenerator`` semantics for the paper profile: rotation
and shear in degrees, shift as a fraction of the side, zoom as a scale in
``[1 - zoom, 1 + zoom]``, constant (black) fill outside the film.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Per-image uniforms: rotation, shift x, shift y, shear, zoom, hflip, vflip, brightness, contrast.
_DRAWS = 9


def augmentation_seed(seed: int, epoch: int, row: int) -> int:
    """The generator seed of image ``row`` in ``epoch`` (a function of these three numbers only)."""
    return hash((seed, epoch, row)) & 0x7FFF_FFFF


def draw_uniforms(seeds: torch.Tensor) -> torch.Tensor:
    """(N, 9) uniforms in [0, 1), row ``k`` from a generator seeded with ``seeds[k]``."""
    return torch.stack([torch.rand(_DRAWS, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()])


def affine_matrices(
    uniforms: torch.Tensor,
    rotation: float = 0.0,
    shift: float = 0.0,
    shear: float = 0.0,
    zoom: float = 0.0,
    hflip: bool = False,
    vflip: bool = False,
) -> torch.Tensor:
    """(N, 2, 3) ``affine_grid`` matrices (output -> input, normalised coordinates) from (N, 9) uniforms.

    The forward transform is flip, then zoom, shear, rotation and shift about the centre; the
    matrix returned is its inverse, which is what ``affine_grid`` samples with.
    """
    u = uniforms.double()
    n = len(u)
    angle = torch.deg2rad((2 * u[:, 0] - 1) * rotation)
    tx, ty = (2 * u[:, 1] - 1) * shift * 2, (2 * u[:, 2] - 1) * shift * 2  # fraction of the side -> [-1, 1] units
    shear_angle = torch.deg2rad((2 * u[:, 3] - 1) * shear)
    scale = 1 + (2 * u[:, 4] - 1) * zoom
    flip_x = torch.where((u[:, 5] < 0.5) & hflip, -1.0, 1.0).double()
    flip_y = torch.where((u[:, 6] < 0.5) & vflip, -1.0, 1.0).double()

    def matrix(a, b, c, d, e, f):
        out = torch.zeros(n, 3, 3, dtype=torch.float64)
        out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a, b, c
        out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = d, e, f
        out[:, 2, 2] = 1
        return out

    zeros, ones = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    flip = matrix(flip_x, zeros, zeros, zeros, flip_y, zeros)
    zoomed = matrix(scale, zeros, zeros, zeros, scale, zeros)
    sheared = matrix(ones, -torch.sin(shear_angle), zeros, zeros, torch.cos(shear_angle), zeros)
    rotated = matrix(torch.cos(angle), -torch.sin(angle), zeros, torch.sin(angle), torch.cos(angle), zeros)
    shifted = matrix(ones, zeros, tx, zeros, ones, ty)
    forward = shifted @ rotated @ sheared @ zoomed @ flip
    return torch.linalg.inv(forward)[:, :2, :].float()


def augment_batch(
    images: torch.Tensor,
    seeds: torch.Tensor,
    size: int,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    **affine,
) -> torch.Tensor:
    """Augment a batch of (N, 1, H, W) float images in [0, 1] into (N, 1, size, size), per-image seeded.

    seeds: (N,) integers, one generator seed per image (:func:`augmentation_seed`).
    affine: ``rotation``, ``shift``, ``shear``, ``zoom``, ``hflip``, ``vflip`` (:func:`affine_matrices`).
    brightness: multiply by a factor in [1 - b, 1 + b]; contrast: scale about the image mean by [1 - c, 1 + c].
    """
    uniforms = draw_uniforms(seeds)
    theta = affine_matrices(uniforms, **affine).to(images.device)
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(
        images.float(),
        grid.to(images.dtype if images.is_floating_point() else torch.float32),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    if brightness:
        out = out * (1 + (2 * uniforms[:, 7] - 1) * brightness).to(out).view(-1, 1, 1, 1)
    if contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * (1 + (2 * uniforms[:, 8] - 1) * contrast).to(out).view(-1, 1, 1, 1) + mean
    return out.clamp_(0, 1)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) floats to (N, C, size, size), antialiased (no-op when already that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def mix_batch(
    images: torch.Tensor, labels: torch.Tensor, seed: int | Sequence[int], mixup: float = 0.0, cutmix: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (a Beta(a, a) blend) or CutMix (a pasted box) of the batch with a permutation of itself.

    Every draw comes from a generator seeded with ``seed``. Returns ``(images, labels_a, labels_b,
    lam)``; the loss is ``lam * L(a) + (1 - lam) * L(b)``. With both on, each batch uses one of
    the two with equal probability.
    """
    if not mixup and not cutmix:
        return images, labels, labels, 1.0
    rng = np.random.default_rng(seed)
    use_cutmix = bool(cutmix) and (not mixup or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    if use_cutmix:
        h, w = images.shape[-2:]
        cut = math.sqrt(1 - lam)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
        x0, x1 = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = images[order][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        images = lam * images + (1 - lam) * images[order]
    return images, labels, labels[order], lam


#: Per-image uniforms of the acquisition augmentation: (apply?, strength) for resample, blur, jpeg, noise, gamma,
#: and a seed for the noise. Drawn from a generator of its own, so switching it on leaves the affine draws as they were.
_ACQUISITION_DRAWS = 11
_ACQUISITION_SALT = 0x5EED_0AC9


def acquisition_batch(
    images: torch.Tensor,
    seeds: torch.Tensor,
    *,
    gamma: float = 0.0,
    blur: float = 0.0,
    noise: float = 0.0,
    jpeg: int = 0,
    resample: float = 0.0,
) -> torch.Tensor:
    """Simulate other acquisition and processing chains on (N, 1, H, W) float films in [0, 1], per-image seeded.

    Each enabled step applies to a film with probability 1/2, at a random strength, in this order:
    down-and-up resampling to a scale in ``[1 - resample, 1]`` (an uploader's small copy); Gaussian
    blur with sigma up to ``blur`` pixels; JPEG re-compression at a quality in ``[jpeg, 95]``
    (``jpeg`` = 0: off); Gaussian noise with a standard deviation up to ``noise``; gamma in
    ``[1 / (1 + gamma), 1 + gamma]``, log-uniform. The operations are torchvision's
    (``transforms.v2.functional``). seeds: (N,) as for :func:`augment_batch`.
    """
    if not (gamma or blur or noise or jpeg or resample):
        return images
    from torchvision.transforms.v2 import functional as TF

    draws = torch.stack(
        [
            torch.rand(_ACQUISITION_DRAWS, generator=torch.Generator().manual_seed(int(s) ^ _ACQUISITION_SALT))
            for s in seeds.tolist()
        ]
    ).tolist()
    out = []
    height, width = images.shape[-2:]
    for image, u in zip(images.float(), draws):
        image = image[None]
        if resample and u[0] < 0.5:
            scale = 1 - u[1] * resample
            small = (max(8, round(height * scale)), max(8, round(width * scale)))
            image = F.interpolate(image, size=small, mode="bilinear", antialias=True, align_corners=False)
            image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
        if blur and u[2] < 0.5 and u[3] * blur > 0.05:
            sigma = u[3] * blur
            kernel = 2 * math.ceil(3 * sigma) + 1
            image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
        if jpeg and u[4] < 0.5:
            quality = int(round(jpeg + u[5] * (95 - jpeg)))
            encoded = image.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
            image = TF.jpeg(encoded[0], quality)[None].to(image.device, torch.float32).div(255)
        if noise and u[6] < 0.5:
            generator = torch.Generator().manual_seed(int(u[10] * 2**31))
            image = image + u[7] * noise * torch.randn(image.shape, generator=generator).to(image.device)
        if gamma and u[8] < 0.5:
            image = image.clamp(0, 1) ** math.exp((2 * u[9] - 1) * math.log1p(gamma))
        out.append(image[0].clamp(0, 1))
    return torch.stack(out)
