"""Distillation terms for detectors (framework-free, Ray-free).

* :func:`box_mask`: where the objects are on a feature map, from boxes in image pixels.
* :func:`imitation_loss`: FPN feature imitation, student maps (through a 1x1 adapter) against
  the teacher's, optionally weighted toward foreground (ground-truth and teacher boxes).
* :func:`proposal_kd_loss`: soft targets on the class logits both heads give for the SAME
  proposals (the student's), with the detection temperature.

For one-stage students (FCOS: one point per feature cell, a sigmoid per class):

* :func:`masked_imitation_loss`: FPN imitation inside the foreground mask only, on maps
  standardised per channel (Cao et al. 2022, PKD) and normalised by twice the mask's area
  (Wang et al. 2019, fine-grained feature imitation), so its scale is about 1 whatever the
  features' width, magnitude, number of levels or foreground count.
* :func:`point_kd_loss`: the teacher's class distribution for each of its boxes, as soft
  targets for the student's points inside that box (see :func:`points_in_boxes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


def _adapted(student: Tensor, adapter: nn.Module, teacher: Tensor) -> Tensor:
    """The student map through its adapter, resized (bilinear) to the teacher map's size."""
    s_map = adapter(student).float()
    if s_map.shape[-2:] != teacher.shape[-2:]:
        s_map = F.interpolate(s_map, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    if s_map.shape != teacher.shape:
        raise ValueError(
            f"adapted student map {list(s_map.shape)} vs teacher map {list(teacher.shape)}"
        )
    return s_map


def standardise(x: Tensor, eps: float = 1e-6) -> Tensor:
    """[B, C, h, w] -> the same, each channel shifted and scaled to mean 0 and standard
    deviation 1 over the batch and its cells (PKD's normalisation, as mmrazor's ``PKDLoss``)."""
    dims = (0, 2, 3)
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)  # unbiased, as torch's and mmrazor's default
    return (x - mean) / (std + eps)


def masked_imitation_loss(
    student: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    pairs: Mapping[str, str],
    adapters: nn.ModuleDict,
    foreground: Sequence[Tensor],
    padded_size: tuple[int, int],
) -> Tensor:
    """FPN imitation on foreground cells only, per level pair
    ``sum over masked cells of mean_c (S_c - T_c)**2 / (2 * masked cells)``, averaged over the
    pairs whose mask is not empty, where ``S`` and ``T`` are the adapted student map and the
    teacher's, each standardised per channel over batch and cells (:func:`standardise`).

    Why this form: Wang et al. (2019, "Distilling Object Detectors with Fine-grained Feature
    Imitation", eq. 2) divide the masked sum of squares by ``2 N_p``, ``N_p`` the masked
    cells, so the foreground count does not set the scale; the mean over channels (their eq.
    sums them) keeps the FPN width out of it; the mean over pairs, the number of levels. The
    features' own magnitude still would (a trained teacher's FPN maps made this term ~66x
    FCOS's loss at weight 1), so both maps are first standardised as in PKD (Cao et al.
    2022, "PKD: General Distillation Framework for Object Detectors via Pearson Correlation
    Coefficient", which targets heterogeneous pairs such as a two-stage teacher and an FCOS
    student): on the whole map the term would be about ``1 - r`` averaged over channels, ``r``
    the Pearson correlation of the two maps, so in [0, 2].

    Maps as in :func:`imitation_loss` (student [B, C_s, h_s, w_s] -> adapter -> resized to the
    teacher's [B, C_t, h_t, w_t]); ``foreground``: per image [N_i, 4] (x0, y0, x1, y1) in
    pixels of the padded batch of size ``padded_size`` (see :func:`box_mask`). No foreground
    cell on any level: 0 (still connected to the graph).
    """
    if not pairs:
        raise ValueError("imitation needs at least one (student level, teacher level) pair")
    terms, zero = [], None
    for s_level, t_level in pairs.items():
        t_map = teacher[t_level].detach().float()
        s_map = _adapted(student[s_level], adapters[s_level], t_map)
        zero = s_map.sum() * 0.0 if zero is None else zero
        mask = box_mask(foreground, padded_size, tuple(t_map.shape[-2:])).to(s_map.device)
        area = mask.sum()
        if area > 0:
            diff = standardise(s_map) - standardise(t_map)
            per_cell = diff.pow(2).mean(dim=1, keepdim=True)
            terms.append((mask * per_cell).sum() / (2 * area))
    assert zero is not None
    return torch.stack(terms).mean() if terms else zero


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """[A] index of the box each point falls in (the smallest by area when several hold it, as
    FCOS assigns its targets), or -1. ``points`` [A, 2] (x, y), ``boxes`` [D, 4]
    (x0, y0, x1, y1), both in pixels; a point on a box's edge is inside."""
    if boxes.shape[0] == 0:
        return torch.full((points.shape[0],), -1, dtype=torch.long, device=points.device)
    x, y = points[:, 0:1], points[:, 1:2]  # [A, 1]
    x0, y0, x1, y1 = boxes.unbind(dim=1)  # [D] each
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)  # [A, D]
    area = (x1 - x0) * (y1 - y0)
    # among the boxes holding a point, the smallest: the largest (max_area + 1 - area)
    rank = inside.float() * (area.max() + 1 - area)
    best, index = rank.max(dim=1)
    return torch.where(best > 0, index, torch.full_like(index, -1))


def fcos_points_in_boxes(
    points: Tensor,
    boxes: Tensor,
    strides: Tensor,
    per_level: Sequence[int],
    radius: float = 1.5,
) -> Tensor:
    """[A] index of the box each point is a positive of under FCOS's own assignment, or -1:
    the rule of torchvision's ``FCOS.compute_loss`` (centre sampling within ``radius`` strides
    of the box centre, strictly inside the box, the largest distance to its sides in the
    level's range (4, 8] strides, the first level from 0 and the last without bound; the
    smallest box when several match). ``points`` [A, 2] (x, y) and ``boxes`` [D, 4] in
    pixels; ``strides`` [A] each point's level stride; ``per_level`` the points per level.

    Why: soft targets on every point inside a box also reach points of the other levels and
    the box's rim, which FCOS's focal loss holds to background; the two terms then pull
    against each other (the point KD stayed flat), and those points never learn to regress.
    """
    if boxes.shape[0] == 0:
        return torch.full((points.shape[0],), -1, dtype=torch.long, device=points.device)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [D, 2]
    near = (points[:, None, :] - centres[None]).abs().max(dim=2).values
    match = near < radius * strides[:, None]  # [A, D]
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    sides = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # [A, D, 4]
    match &= sides.min(dim=2).values > 0
    lower, upper = strides * 4.0, strides * 8.0
    lower[: per_level[0]] = 0
    upper[-per_level[-1] :] = float("inf")
    far = sides.max(dim=2).values
    match &= (far > lower[:, None]) & (far < upper[:, None])
    area = (x1 - x0) * (y1 - y0)
    rank = match.float() * (area.max() + 1 - area)
    best, index = rank.max(dim=1)
    return torch.where(best > 0, index, torch.full_like(index, -1))


def point_kd_loss(
    student_logits: Tensor,
    points: Tensor,
    teacher_boxes: Sequence[Tensor],
    teacher_logits: Sequence[Tensor],
    temperature: float,
    teacher_scores: Sequence[Tensor] | None = None,
    min_score: float = 0.0,
    assign: Callable[[Tensor, Tensor], Tensor] = points_in_boxes,
) -> Tensor:
    """Classification KD for a one-stage student at its points, from a two-stage teacher.

    How the teacher scores the student's locations: the teacher detects on the same resized
    images, and its box head re-scores each of its own detections (``teacher_logits``: per
    image [D_i, K+1], background at index 0, for ``teacher_boxes`` [D_i, 4] in pixels). Every
    student point inside a teacher box (the smallest, see :func:`points_in_boxes`) takes that
    box's distribution ``p = softmax(t / T)``; points in no teacher box take no soft target
    (their background is the focal loss's to learn). With ``teacher_scores`` (per image [D_i],
    the detections' scores) only boxes scoring above ``min_score`` teach: the teacher keeps
    boxes down to its own 0.05 threshold, and the smallest box holding a point is then mostly
    a low-score fragment (on the shapes set, 71% of the assigned points at a 0.5 threshold)
    whose distribution says "background" on the object. ``assign(points, boxes)`` picks
    each point's box (default :func:`points_in_boxes`; an FCOS student's distiller passes
    :func:`fcos_points_in_boxes`, so only the points FCOS would train as a box's positives
    take its soft target).

    The student scores each class with its own sigmoid, ``q_c = sigmoid(s_c / T)``
    (``student_logits`` [B, A, K+1]: FCOS's class channels, channel 0 never a target), so the
    term is the binary KL of each foreground class, ``p_c log(p_c / q_c) + (1 - p_c)
    log((1 - p_c) / (1 - q_c))`` for c = 1..K, summed over classes, averaged over the assigned
    points of the batch, times ``T**2``. ``points``: [A, 2] (x, y) in pixels, the same for
    every image of the batch (one per feature cell). No assigned point: 0.

    The reduction mirrors FCOS's focal loss (summed over classes, divided by the positive
    points), so the number of points and of teacher boxes does not set the scale; ``T**2``
    keeps the gradient's size about the same across temperatures (Hinton et al. 2015: for a
    sigmoid too, ``d/ds`` of the KL is ``(q - p) / T``, and ``q - p`` shrinks like ``1 / T``).
    """
    eps = 1e-6
    per_image = []
    for b, (boxes, logits) in enumerate(zip(teacher_boxes, teacher_logits, strict=True)):
        if teacher_scores is not None:
            confident = teacher_scores[b] > min_score
            boxes, logits = boxes[confident], logits[confident]
        index = assign(points, boxes)
        keep = index >= 0
        if not bool(keep.any()):
            continue
        p = torch.softmax(logits[index[keep]].float() / temperature, dim=-1)[:, 1:]
        p = p.clamp(eps, 1 - eps)
        log_q = F.logsigmoid(student_logits[b, keep, 1:].float() / temperature)
        log_not_q = F.logsigmoid(-student_logits[b, keep, 1:].float() / temperature)
        kl = p * (p.log() - log_q) + (1 - p) * ((1 - p).log() - log_not_q)
        per_image.append(kl.sum(dim=1))
    if not per_image:
        return student_logits.sum() * 0.0
    return torch.cat(per_image).mean() * temperature**2
