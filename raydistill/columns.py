"""Every column a row can carry, and which stage adds it.

A row flows source -> augment -> teacher pass -> train worker; each stage adds columns and none
renames another's. Names live here only, so a reader finds in one place what a row holds.

Classification, text and cross-modal rows:

================  ==================  ====================================================
column            added by            holds
================  ==================  ====================================================
``input``         source / tokenize   the trained model's input: float32 [*shape] (images,
                                      tensors) or packed int64 tokens [2, max_length]
``label``         source              int64 class id
``row_id``        source              int64, stable within a split (balancing, NaN reports)
``text``          source (text)       the row's string, until the tokenize stage drops it
``teacher_input`` tokenize            what a teacher reading something else reads (its own
                                      tokens, or a cross-modal row's image)
``view``          augment             int64 index of the augmented copy
``teacher_logits`` teacher pass       float32 [C] log-probabilities (or fp16 / top-k codec
                                      columns, see :mod:`raydistill.teacher.codec`)
``teacher_feat.<layer>`` teacher pass  a tapped teacher feature, float [*feature_shape]
``labelled``      train worker        bool: a student stage learns this row's label
                                      (``data.labelled_fraction``), from its ``row_id``;
                                      computed once per stage on rows held in memory
================  ==================  ====================================================

Detection rows (one image each; ragged data travels as raw bytes): ``image_id``, ``path``,
``width``, ``height`` (annotation pixels), ``image`` (uint8 H x W x 3 bytes after decoding, with
``height``/``width`` then the decoded size), ``scale_x``/``scale_y`` (decoded / annotation
pixels), ``boxes`` (float32 [N, 4] xyxy bytes) and ``labels`` (int64 [N] bytes).
"""

from __future__ import annotations

INPUT = "input"
LABEL = "label"
ROW_ID = "row_id"
TEXT = "text"
TEACHER_INPUT = "teacher_input"
VIEW = "view"
LABELLED = "labelled"

# teacher outputs (the codecs' columns)
TEACHER_LOGITS = "teacher_logits"
TOPK_VALUES = "teacher_topk_values"
TOPK_INDICES = "teacher_topk_indices"
TAIL = "teacher_tail_logit"
FEATURE_PREFIX = "teacher_feat."

# detection rows
IMAGE_ID = "image_id"
IMAGE_PATH = "path"
IMAGE = "image"
WIDTH = "width"
HEIGHT = "height"
SCALE_X = "scale_x"
SCALE_Y = "scale_y"
BOXES = "boxes"
LABELS = "labels"


def feature_column(layer: str) -> str:
    """The column of the teacher's tapped ``layer`` output."""
    return FEATURE_PREFIX + layer


def view_dataset_name(view: int) -> str:
    """The Ray Train dataset that holds the training rows of augmented ``view``."""
    return f"train_view{view}"
