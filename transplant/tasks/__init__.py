"""Task types (classification, segmentation), selected by name; each one file that registers itself."""
from transplant.tasks import classification, segmentation  # noqa: F401 (register)
from transplant.tasks.base import (TASK_TYPES, Metric, OutputMeaning, TaskType, default_task_for, get_task,
                                   lower_is_better, register, task_names)
from transplant.tasks.classification import CLASSIFICATION
from transplant.tasks.segmentation import SEGMENTATION

__all__ = ["CLASSIFICATION", "SEGMENTATION", "TASK_TYPES", "Metric", "OutputMeaning", "TaskType",
           "default_task_for", "get_task", "lower_is_better", "register", "task_names"]
