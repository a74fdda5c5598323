"""Detection distillation on COCO-format data: reading, box-consistent transforms, detectors,
the Ray Train loop and COCO mAP."""
