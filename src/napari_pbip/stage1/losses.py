"""Stage-1 losses: multi-label classification per level (eq. 7-8) and FG/BG similarity (eq. 9-13).

Every loss function returns tensors; :func:`pbip_loss` returns the named parts ``loss``, ``cls``,
``fg`` and ``bg`` so logs, the GUI plot and tests see each one.

Similarities are cosines between encoder features of the FG/BG images and the raw d-dim bank
prototypes; only valid prototype slots count. For an (image, present class j) pair:

* ``s_FF`` = mean of cos(F_FG, P[j, k]) over class j's prototypes; ``s_FB`` = the mean over all
  other classes' prototypes; ``L_FGS = -log(e^{s_FF/t} / (e^{s_FF/t} + e^{s_FB/t})) =
  softplus((s_FB - s_FF) / t)``;
* ``s_BB`` = mean of cos(F_BG, P[n, k]) over the other classes n; ``s_BF`` = mean over class j's;
  ``L_BGS = -log(e^{s_BB/t} / (e^{s_BF/t} + e^{s_BB/t})) = softplus((s_BF - s_BB) / t)``;

both averaged over the pairs of the batch (0 when the batch has no present class). Eq. 9-10 as
written sum the similarities, K of class j's against K (N - 1) of the others': with non-negative
encoder features (ReLU6) every cosine is >= 0, so that form falls when all similarities fall, and
rewards FG images that look like no tissue at all. Means compare like with like: adding a constant
to every similarity leaves both losses unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events import LOSS

CLS, FG, BG = "cls", "fg", "bg"  # the parts of pbip_loss beside LOSS: log.jsonl keys, plot curves


def classification_loss(logits: Sequence, labels, weights: Sequence[float]):
    """Eq. 7-8: ``sum_i w_i * BCE-with-logits(logits_i, labels)`` (mean over images and classes)."""
    import torch.nn.functional as F

    total = 0.0
    for lg, w in zip(logits, weights, strict=True):
        total = total + w * F.binary_cross_entropy_with_logits(lg.float(), labels.float())
    return total


def prototype_similarities(features, prototypes, valid):
    """Cosine of each feature with each prototype slot -> ``(P, N, K)``, 0 at invalid slots."""
    import torch.nn.functional as F

    f = F.normalize(features.float(), dim=-1, eps=1e-6)
    p = F.normalize(prototypes.float(), dim=-1, eps=1e-6)
    sims = f @ p.reshape(-1, p.shape[-1]).T
    return sims.reshape(f.shape[0], *p.shape[:2]) * valid.to(sims.dtype)


def similarity_losses(fg_feat, bg_feat, class_index, prototypes, valid, tau_s: float):
    """Eq. 9-13: ``(L_FGS, L_BGS)`` for FG/BG features of (image, class) pairs.

    Args:
        fg_feat: ``(P, d)`` encoder features of the foreground images.
        bg_feat: ``(P, d)`` encoder features of the background images.
        class_index: ``(P,)`` class j of each pair.
        prototypes: ``(N, K, d)`` bank prototypes.
        valid: ``(N, K)`` validity of each prototype slot.
        tau_s: temperature.

    Returns:
        Two scalar tensors (zero when ``P == 0``).
    """
    import torch
    import torch.nn.functional as F

    if fg_feat.shape[0] == 0:
        zero = prototypes.new_zeros(())
        return zero, zero
    n_classes = prototypes.shape[0]
    own = F.one_hot(class_index, n_classes).to(torch.float32)[:, :, None]  # (P, N, 1)
    vmask = valid.to(torch.float32)[None]  # (1, N, K)
    own_slots, other_slots = own * vmask, (1 - own) * vmask

    n_own = own_slots.sum(dim=(1, 2)).clamp_min(1)
    n_other = other_slots.sum(dim=(1, 2)).clamp_min(1)

    sim_fg = prototype_similarities(fg_feat, prototypes, valid)
    s_ff = (sim_fg * own_slots).sum(dim=(1, 2)) / n_own
    s_fb = (sim_fg * other_slots).sum(dim=(1, 2)) / n_other
    l_fg = F.softplus((s_fb - s_ff) / tau_s).mean()

    sim_bg = prototype_similarities(bg_feat, prototypes, valid)
    s_bf = (sim_bg * own_slots).sum(dim=(1, 2)) / n_own
    s_bb = (sim_bg * other_slots).sum(dim=(1, 2)) / n_other
    l_bg = F.softplus((s_bf - s_bb) / tau_s).mean()
    return l_fg, l_bg


def pbip_loss(logits: Sequence, labels, settings, fg_feat=None, bg_feat=None, class_index=None, model=None):
    """``L = alpha L_CLS + beta (theta1 L_FGS + theta2 L_BGS)`` as a dict of named parts.

    Args:
        logits: per-level ``(B, N)`` image logits.
        labels: ``(B, N)`` image labels in {0, 1}.
        settings: :class:`~napari_pbip.stage1.settings.TrainSettings`.
        fg_feat, bg_feat, class_index: FG/BG features and classes of the pairs (None for the
            baseline, whose loss is ``alpha L_CLS`` alone).
        model: the ClassNet holding the ``prototypes`` / ``proto_valid`` buffers.

    Returns:
        ``{LOSS, CLS, FG, BG}`` (``"loss"``, ``"cls"``, ``"fg"``, ``"bg"``) scalar tensors
        (``loss`` carries the gradient).
    """
    cls = classification_loss(logits, labels, settings.level_weights)
    if fg_feat is None:
        zero = cls.new_zeros(())
        return {LOSS: settings.alpha * cls, CLS: cls, FG: zero, BG: zero}
    l_fg, l_bg = similarity_losses(
        fg_feat, bg_feat, class_index, model.prototypes, model.proto_valid, settings.tau_s
    )
    loss = settings.alpha * cls + settings.beta * (settings.theta1 * l_fg + settings.theta2 * l_bg)
    return {LOSS: loss, CLS: cls, FG: l_fg, BG: l_bg}
