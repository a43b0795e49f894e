"""ImgMatchNet: fused CAMs, adaptive threshold and foreground / background images (eq. 3-5).

Eq. 3 fuses the level CAMs at one resolution with :func:`napari_pbip.stage1.pseudo.fuse_levels`, the
function pseudo-masks use (per level ReLU and min-max per class, then the fusion-weighted mean), so
foreground means the same thing in training and in the masks; in ``"global"`` mode the fused maps
are then scaled jointly over the present classes. Eq. 4 thresholds at ``tau = delta * max``; eq. 5
builds ``X_FG = b * M * X`` and ``X_BG = (1 - b) * (1 - M) * X``. The images go through the bank's frozen
encoder; its weights get no gradient, but the encoder is *not* run under ``no_grad``, so the
similarity losses reach ClassNet through ``M``.

The FG/BG images are built directly at ``match_size`` (the CAMs are upsampled to that side and the
image resized to it), which equals building them at input resolution and resizing before the
encoder, without the full-size intermediate. By default ``match_size`` is the bank encoder's input
size, the size the prototypes were encoded at. All present classes of all images go through the
encoder in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def normalise_cams(fused, labels, mode: str = "class"):
    """Scale fused CAMs to [0, 1]: per class (``"class"``) or jointly over the present classes (``"global"``).

    Args:
        fused: ``(B, N, H, W)`` fused CAMs.
        labels: ``(B, N)`` image labels in {0, 1}; in ``"global"`` mode only present classes set
            the range.
        mode: ``"class"`` or ``"global"``.

    Returns:
        ``(B, N, H, W)`` maps in [0, 1], differentiable.
    """
    import torch

    eps = 1e-6
    if mode == "class":
        lo = fused.amin(dim=(2, 3), keepdim=True)
        hi = fused.amax(dim=(2, 3), keepdim=True)
    else:
        present = labels.bool()[:, :, None, None].expand_as(fused)
        big = torch.finfo(fused.dtype).max
        lo = torch.where(present, fused, torch.full_like(fused, big)).amin(dim=(1, 2, 3), keepdim=True)
        hi = torch.where(present, fused, torch.full_like(fused, -big)).amax(dim=(1, 2, 3), keepdim=True)
        none = ~labels.bool().any(dim=1)[:, None, None, None]
        lo = torch.where(none, fused.amin(dim=(1, 2, 3), keepdim=True), lo)
        hi = torch.where(none, fused.amax(dim=(1, 2, 3), keepdim=True), hi)
    return ((fused - lo) / (hi - lo).clamp_min(eps)).clamp(0, 1)


def threshold_masks(norm, labels, delta: float, mode: str = "class"):
    """Eq. 4: binary masks ``b = M >= delta * max(M)`` (per class or over the present classes); no gradient."""
    import torch

    norm = norm.detach()
    if mode == "class":
        peak = norm.amax(dim=(2, 3), keepdim=True)
    else:
        gated = torch.where(labels.bool()[:, :, None, None], norm, torch.zeros_like(norm))
        peak = gated.amax(dim=(1, 2, 3), keepdim=True)
    return (norm >= delta * peak).to(norm.dtype)


@dataclass
class MatchBatch:
    """FG/BG images of every (image, present class) pair.

    Attributes:
        image_index: ``(P,)`` batch index of each pair.
        class_index: ``(P,)`` class of each pair.
        fg: ``(P, 3, m, m)`` foreground images ``b * M * X``.
        bg: ``(P, 3, m, m)`` background images ``(1 - b) * (1 - M) * X``.
        norm: ``(B, N, m, m)`` fused CAMs scaled to [0, 1] (for previews).
        mask: ``(B, N, m, m)`` thresholded masks b (for previews).
    """

    image_index: Any
    class_index: Any
    fg: Any
    bg: Any
    norm: Any
    mask: Any


def fg_bg_images(
    images,
    cams,
    labels,
    size: int,
    delta: float,
    mode: str = "class",
    fill: str = "black",
    weights: tuple[float, ...] | None = None,
) -> MatchBatch:
    """Eq. 3-5 for a batch: fuse, scale, threshold and split the images of each present class.

    Args:
        images: ``(B, 3, H, W)`` RGB in [0, 1].
        cams: list of per-level CAMs ``(B, N, h_i, w_i)``.
        labels: ``(B, N)`` image labels in {0, 1}.
        size: side of the FG/BG images (``match_size``).
        delta: threshold fraction (eq. 4).
        mode: ``"class"`` (paper) or ``"global"`` (reference code).
        fill: what the masked-out share of each pixel shows: ``"black"`` (eq. 5 as written,
            ``w * X``) or ``"white"`` (``w * X + (1 - w)``, i.e. glass, closer to the tissue images
            the bank prototypes were encoded from).
        weights: fusion weight per level (None: equal weights).
    """
    import torch.nn.functional as F

    from .pseudo import fuse_levels

    x = images
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    norm = fuse_levels(cams, (size, size), weights or (1.0,) * len(cams))
    if mode == "global":
        norm = normalise_cams(norm, labels, mode)
    b = threshold_masks(norm, labels, delta, mode)
    bi, ci = labels.bool().nonzero(as_tuple=True)
    m = norm[bi, ci][:, None]
    bb = b[bi, ci][:, None]
    xs = x[bi].to(m.dtype)
    w_fg, w_bg = bb * m, (1 - bb) * (1 - m)
    if fill == "white":
        return MatchBatch(bi, ci, w_fg * xs + (1 - w_fg), w_bg * xs + (1 - w_bg), norm, b)
    return MatchBatch(bi, ci, w_fg * xs, w_bg * xs, norm, b)


def encode_pairs(encoder, batch: MatchBatch):
    """Features of the FG and BG images in one encoder call -> ``(fg (P, d), bg (P, d))``.

    The encoder's parameters must be frozen (``requires_grad=False``); gradient still flows to the
    images and through them to the CAMs.
    """
    import torch

    n = batch.fg.shape[0]
    if n == 0:
        d = encoder.feature_dim
        empty = batch.fg.new_zeros((0, d))
        return empty, empty
    feats = encoder(torch.cat([batch.fg, batch.bg], dim=0)).float()
    return feats[:n], feats[n:]
