"""Stage-1 training settings (ClassNet + ImgMatchNet, or the plain-CAM baseline).

Where the paper and the reference code differ, both are selectable and the paper's value is the
default (DESIGN.md section 2):

=================  =====================  ==========================
setting            paper (default)        reference code
=================  =====================  ==========================
levels             last 3 of 4            all 4 ``(-4, -3, -2, -1)``
threshold_mode     ``"class"``, delta .15 ``"global"``, delta 0.5
tau_s              1                      0.07
level_weights      1 per level            0, 0.1, 1, 1
=================  =====================  ==========================

Defaults chosen for this package (justified in the field comments): ``cam_scale``, ``lr``,
``head_lr_mult``, ``epochs``, ``match_size``.
"""

from __future__ import annotations

import dataclasses

from ..settings import Settings, check

THRESHOLD_MODES = ("class", "global")
FILLS = ("black", "white")
DEFAULT_DELTA = {"class": 0.15, "global": 0.5}


def level_weight_defaults(n_levels: int) -> dict[str, tuple[float, ...]]:
    """The ``level_weights`` and ``fusion_weights`` a run with ``n_levels`` backbone levels gets
    unless it gives them: 1 per level in L_CLS; for fusion the reference's 0.3, 0.3, 0.4 with three
    levels, else equal shares."""
    return {
        "level_weights": (1.0,) * n_levels,
        "fusion_weights": (0.3, 0.3, 0.4) if n_levels == 3 else (1.0 / n_levels,) * n_levels,
    }


@dataclasses.dataclass(frozen=True)
class TrainSettings(Settings):
    """Everything that defines a stage-1 training run.

    Attributes:
        backbone: registered backbone name (``models.list_backbones()``) or a hub id.
        pretrained: load the backbone's pretrained weights.
        baseline: train the plain-CAM baseline (1x1-conv classifier per level, no prototypes, no SIM
            loss; the paper's Table 5 ablation) on the same backbone, loop and budget.
        levels: backbone levels used for CAMs, indices into its maps (finest first; negative counts
            from the coarsest). Paper: the last 3; reference code: all 4.
        output_stride: the coarsest stride of the backbone's maps: 16 dilates the last stage of a
            CNN backbone (same weights) so the coarsest CAM is 1/16 of the input, as the paper's
            levels (strides 4/8/16) and the reference code's coarsest; with EfficientNet-Lite0 the
            default levels are then at strides 8/16/16 (40/112/320 channels) instead of 8/16/32,
            whose 7x7 map at 224 px carried 40% of the fusion weight. None keeps the native strides;
            backbones that cannot dilate (transformers' MiT) need None and levels whose stride is at
            most 16, e.g. ``(-4, -3, -2)`` for MiT's 4/8/16.
        level_weights: weight of each level's BCE in L_CLS (eq. 8), one per level.
        fusion_weights: weight of each level's CAM when fusing CAMs into pseudo-masks (reference:
            0.3, 0.3, 0.4 for the last three levels), one per level.
        cam_scale: initial value of the (learnable) scale multiplying the mean cosine in eq. 2.
            Cosines lie in [-1, 1], so without a scale the GAP logits cannot leave [-1, 1] and the
            BCE cannot fit the labels; 1/0.07 (the reference's init, CLIP's temperature) lets a mean
            cosine of +-0.35 reach logits of +-5.
        learn_scale: let the optimizer adapt the scale (reference: learnable).
        threshold_mode: ``"class"``: tau = delta * the class's own max (eq. 4, paper); ``"global"``:
            fused CAMs are scaled jointly over the classes and tau = delta * the max over all of
            them (reference code).
        delta: threshold fraction; None picks 0.15 for ``"class"`` and 0.5 for ``"global"``.
        fg_bg_fill: what masked-out pixels of the FG/BG images show: ``"black"`` (eq. 5 as written)
            or ``"white"`` (glass, as around the tissue of the bank's patches). Measured with
            ``benchmarks/fill_match.py`` (ground-truth regions of the 31 WSSS4LUAD dev images cut
            out as eq. 5 does, encoded at the bank's size): see docs/benchmarks.md.
        tau_s: temperature of the FG/BG similarity losses (eq. 9-13; paper 1, reference 0.07). The
            losses compare mean similarities (see :mod:`.losses`), so they do not change when every
            similarity moves by the same amount.
        alpha: weight of L_CLS.
        beta: weight of L_SIM.
        theta1: weight of L_FGS within L_SIM.
        theta2: weight of L_BGS within L_SIM.
        lr: AdamW learning rate of the backbone. The paper's 1e-5 is for a pretrained MiT over 10
            epochs of tens of thousands of patches; with a few hundred patches and minutes of CPU,
            1e-4 adapts the ImageNet features within the budget without forgetting them.
        head_lr_mult: learning-rate multiple for the newly initialised parts (prototype MLPs, CAM
            scale, baseline 1x1 convs), which start from random weights and need larger steps.
        weight_decay: AdamW weight decay (paper 0.003).
        poly_power: exponent of the poly schedule ``lr * (1 - step / total) ** power``.
        epochs: passes over the training split.
        batch_size: images per optimizer step (paper 10).
        image_size: training images are resized to this side.
        match_size: side the FG/BG images are resized to before the frozen encoder. None (default):
            the bank encoder's input size, the size the prototypes they are compared with were
            encoded at, so both show the tissue at one magnification. A smaller side is cheaper
            (on this project's 2-core CPU, before the stride-16 dilation: 14.5 images/s at 64 px vs
            4.7 at 224 px; with the defaults now 3.3 images/s, so a 6-epoch run on 377 tiles takes
            about 12 minutes, extrapolated from one timed epoch) but compares features across a
            scale gap; its quality cost is not measured yet.
        seed: seeds the model heads, shuffling, augmentation and every step (resume is exact).
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ...
        amp: bfloat16 autocast on CUDA (ignored on the CPU).
        channels_last: channels-last memory format on CUDA (ignored on the CPU).
        preview_every: steps between CAM / FG-BG previews in the events (0: none).
        n_preview: training images in the fixed preview set.
        max_minutes: stop cleanly (checkpoint kept, resumable) after this many minutes; None: no limit.
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    baseline: bool = False
    levels: tuple[int, ...] = (-3, -2, -1)
    output_stride: int | None = 16
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    fusion_weights: tuple[float, ...] = (0.3, 0.3, 0.4)
    cam_scale: float = 1 / 0.07
    learn_scale: bool = True
    threshold_mode: str = "class"
    delta: float | None = None
    fg_bg_fill: str = "white"
    tau_s: float = 1.0
    alpha: float = 1.0
    beta: float = 0.5
    theta1: float = 1.0
    theta2: float = 0.5
    lr: float = 1e-4
    head_lr_mult: float = 10.0
    weight_decay: float = 0.003
    poly_power: float = 0.9
    epochs: int = 6
    batch_size: int = 10
    image_size: int = 224
    match_size: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    preview_every: int = 25
    n_preview: int = 4
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        check(
            isinstance(self.backbone, str) and bool(self.backbone),
            "backbone",
            self.backbone,
            "a backbone name",
        )
        n = len(self.levels)
        check(
            n >= 1 and len(set(self.levels)) == n,
            "levels",
            self.levels,
            "distinct level indices, e.g. (-3, -2, -1)",
        )
        for name in ("level_weights", "fusion_weights"):
            value = getattr(self, name)
            check(
                len(value) == n and all(v >= 0 for v in value) and sum(value) > 0,
                name,
                value,
                f"{n} non-negative weights (one per level in levels={self.levels}), not all zero",
                "give one weight per level",
            )
        check(self.cam_scale > 0, "cam_scale", self.cam_scale, "a positive number (reference: 1/0.07)")
        check(
            self.threshold_mode in THRESHOLD_MODES,
            "threshold_mode",
            self.threshold_mode,
            f"one of {THRESHOLD_MODES}",
        )
        if self.delta is None:
            object.__setattr__(self, "delta", DEFAULT_DELTA[self.threshold_mode])
        check(self.fg_bg_fill in FILLS, "fg_bg_fill", self.fg_bg_fill, f"one of {FILLS}")
        check(0 < self.delta < 1, "delta", self.delta, "a fraction in (0, 1) (paper 0.15, reference 0.5)")
        check(self.tau_s > 0, "tau_s", self.tau_s, "a positive temperature (paper 1, reference 0.07)")
        for name in ("alpha", "beta", "theta1", "theta2", "weight_decay", "poly_power"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "a non-negative number")
        check(self.lr > 0, "lr", self.lr, "a positive learning rate, e.g. 1e-4")
        check(self.head_lr_mult > 0, "head_lr_mult", self.head_lr_mult, "a positive multiple, e.g. 10")
        check(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")
        check(
            self.image_size >= 32 and self.image_size % 32 == 0,
            "image_size",
            self.image_size,
            "a multiple of 32, >= 32",
        )
        check(
            self.match_size is None or self.match_size >= 32,
            "match_size",
            self.match_size,
            "None (the bank encoder's input size) or at least 32 px",
        )
        check(
            self.output_stride in (None, 8, 16, 32),
            "output_stride",
            self.output_stride,
            "None (the backbone's own strides), 8, 16 or 32",
        )
        check(self.preview_every >= 0, "preview_every", self.preview_every, "0 (off) or a number of steps")
        check(self.n_preview >= 1, "n_preview", self.n_preview, "at least 1")
        check(
            self.max_minutes is None or self.max_minutes > 0,
            "max_minutes",
            self.max_minutes,
            "None (no limit) or a positive number of minutes",
        )

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        """Settings from a saved dict; fields a run saved before they existed get :data:`LEGACY_DEFAULTS`."""
        return super().from_dict({**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in data}, **data})

    @property
    def mode(self) -> str:
        """``"baseline"`` for the plain-CAM baseline, ``"pbip"`` otherwise."""
        return "baseline" if self.baseline else "pbip"


# Values of fields added after runs were first saved, for reading those runs: a run saved without
# ``output_stride`` was trained on the backbone's native strides.
LEGACY_DEFAULTS: dict[str, object] = {"output_stride": None}

# Fields that may change when a run is resumed; every other field must match the saved settings.
RESUMABLE_FIELDS = ("epochs", "max_minutes", "device", "preview_every", "n_preview")
