"""Teacher serving: the actor pool that adds teacher outputs to each row."""

from raydistill.teacher.pool import (
    FEATURE_PREFIX,
    TEACHER_LOGITS,
    TeacherPredictor,
    attach_teacher,
    feature_column,
)

__all__ = [
    "FEATURE_PREFIX",
    "TEACHER_LOGITS",
    "TeacherPredictor",
    "attach_teacher",
    "feature_column",
]
