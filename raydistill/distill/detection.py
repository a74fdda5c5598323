"""Distillation terms for detectors (framework-free, Ray-free).

* :func:`box_mask`: where the objects are on a feature map, from boxes in image pixels.
* :func:`imitation_loss`: FPN feature imitation, student maps (through a 1x1 adapter) against
  the teacher's, optionally weighted toward foreground (ground-truth and teacher boxes).
* :func:`proposal_kd_loss`: soft targets on the class logits both heads give for the SAME
  proposals (the student's), with the detection temperature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydistill.distill.losses import soft_target_loss


def box_mask(
    boxes: Sequence[Tensor], padded_size: tuple[int, int], feature_size: tuple[int, int]
) -> Tensor:
    """[B, 1, h, w] mask: 1 on feature cells covered by any box of that image, else 0.

    Args:
        boxes: per image, [N_i, 4] (x0, y0, x1, y1) in pixels of the batched (padded) image.
        padded_size: (H, W) of the batched image tensor in pixels.
        feature_size: (h, w) of the feature map.
    """
    h, w = feature_size
    sy, sx = h / padded_size[0], w / padded_size[1]
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    mask = torch.zeros(len(boxes), 1, h, w, device=device)
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1 in b.tolist():
            c0, r0 = int(x0 * sx), int(y0 * sy)
            c1, r1 = max(c0 + 1, int(-(-x1 * sx // 1))), max(r0 + 1, int(-(-y1 * sy // 1)))
            mask[i, 0, r0:r1, c0:c1] = 1.0
    return mask


def level_adapters(
    pairs: Mapping[str, str],
    student_channels: Mapping[str, int],
    teacher_channels: Mapping[str, int],
) -> nn.ModuleDict:
    """One 1x1 convolution per (student level -> teacher level) pair mapping the student's
    channels to the teacher's (identity when equal); spatial sizes are matched at call time."""
    adapters = nn.ModuleDict()
    for s, t in pairs.items():
        cs, ct = student_channels[s], teacher_channels[t]
        adapters[s] = nn.Identity() if cs == ct else nn.Conv2d(cs, ct, kernel_size=1)
    return adapters


def imitation_loss(
    student: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    pairs: Mapping[str, str],
    adapters: nn.ModuleDict,
    foreground: Sequence[Tensor] | None = None,
    padded_size: tuple[int, int] | None = None,
    foreground_weight: float = 0.0,
) -> Tensor:
    """Mean over level pairs of the weighted mean squared difference per feature cell.

    Each student map [B, C_s, h_s, w_s] goes through its adapter to [B, C_t, h_s, w_s], then is
    resized (bilinear) to the teacher map's [h_t, w_t]. The squared difference is averaged over
    channels; cells get weight ``1 + foreground_weight`` inside ``foreground`` boxes (per image
    [N_i, 4] in pixels of the padded batch of size ``padded_size``) and 1 elsewhere, and the
    weighted cells are averaged. With ``foreground_weight`` 0 this is the plain MSE.
    """
    if not pairs:
        raise ValueError("imitation_loss needs at least one (student level, teacher level) pair")
    terms = []
    for s_level, t_level in pairs.items():
        t_map = teacher[t_level].detach().float()
        s_map = adapters[s_level](student[s_level]).float()
        if s_map.shape[-2:] != t_map.shape[-2:]:
            s_map = F.interpolate(
                s_map, size=t_map.shape[-2:], mode="bilinear", align_corners=False
            )
        if s_map.shape != t_map.shape:
            raise ValueError(
                f"level {s_level} -> {t_level}: adapted student map {list(s_map.shape)} vs "
                f"teacher map {list(t_map.shape)}"
            )
        per_cell = (s_map - t_map).pow(2).mean(dim=1, keepdim=True)
        if foreground is not None and foreground_weight > 0:
            assert padded_size is not None, "foreground boxes need the padded image size"
            mask = box_mask(foreground, padded_size, tuple(t_map.shape[-2:]))
            weights = 1.0 + foreground_weight * mask.to(per_cell.device)
            terms.append((weights * per_cell).sum() / weights.sum())
        else:
            terms.append(per_cell.mean())
    return torch.stack(terms).mean()


def proposal_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Soft-target KD on the box head's class logits [P, K+1] (background included) for the same
    P proposals: ``T**2 * KL(softmax(t/T) || softmax(s/T))`` averaged over proposals."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    return soft_target_loss(student_logits, teacher_logits, temperature)
