"""Data for network transplanting: per-category binary data sets, with masks where there are any.

Sources: scikit-learn's digits (classification), procedural shapes with pixel-exact masks
(classification and segmentation, similar "mammal" and dissimilar groups as in the paper),
and users' own ImageFolder or PASCAL-VOC trees. Nothing is downloaded.
"""
from transplant.data.common import CategoryDataset, Split, feature_norm_images
from transplant.data.digits import load_digits_category, load_digits_multiclass
from transplant.data.folders import VOC_CLASSES, load_image_folder, load_voc_folder, load_voc_split, voc_class_index
from transplant.data.shapes import (
    BACKGROUND,
    CATEGORIES,
    DISSIMILAR,
    HARD_NEGATIVES,
    RANDOM_NEGATIVES,
    SIMILAR,
    load_shapes_category,
    load_shapes_multicategory,
    render,
)

__all__ = [
    "BACKGROUND", "HARD_NEGATIVES", "RANDOM_NEGATIVES", "CATEGORIES", "DISSIMILAR", "SIMILAR", "VOC_CLASSES", "CategoryDataset", "Split", "feature_norm_images",
    "load_digits_category", "load_digits_multiclass", "load_image_folder", "load_shapes_category",
    "load_shapes_multicategory", "load_voc_folder", "load_voc_split", "render", "voc_class_index",
]
