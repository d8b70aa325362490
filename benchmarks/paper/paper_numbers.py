"""The paper's own numbers (Tables 2-4), for the report's side-by-side columns.

Keys: (adapter_layers, samples, method) -> {category: value, "Avg.": value}.
Exp.1's categories are the paper's VOC mammals; ours are digits, so only "Avg." is comparable there.
"""
from __future__ import annotations

PAPER_CATS = ("cat", "cow", "dog", "horse", "sheep")
PAPER_TRANSPLANT_CATS = ("cat", "cow", "horse", "sheep")


def _row(cats, values):
    return {**dict(zip(cats, values[:-1])), "Avg.": values[-1]}


_T2 = {  # Table 2: error rate (%), adapter inserted into the same VGG-16
    (1, 100, "direct_learn"): [12.89, 3.09, 12.89, 10.82, 9.28, 9.79],
    (1, 100, "back_distill"): [1.55, 0.52, 3.61, 1.55, 1.03, 1.65],
    (1, 50, "direct_learn"): [13.92, 15.98, 12.37, 16.49, 15.46, 14.84],
    (1, 50, "back_distill"): [1.55, 0.52, 3.61, 1.55, 1.03, 1.65],
    (1, 20, "direct_learn"): [16.49, 26.80, 28.35, 32.47, 25.77, 25.98],
    (1, 20, "back_distill"): [1.55, 0.52, 3.09, 1.55, 1.03, 1.55],
    (1, 10, "direct_learn"): [39.18, 39.18, 35.05, 41.75, 38.66, 38.76],
    (1, 10, "back_distill"): [1.55, 0.52, 3.61, 1.55, 1.03, 1.65],
    (1, 0, "back_distill"): [1.55, 0.52, 4.12, 1.55, 1.03, 1.75],
    (3, 100, "direct_learn"): [9.28, 6.70, 12.37, 11.34, 3.61, 8.66],
    (3, 100, "back_distill"): [1.03, 2.58, 4.12, 1.55, 2.58, 2.37],
    (3, 50, "direct_learn"): [14.43, 13.92, 15.46, 8.76, 7.22, 11.96],
    (3, 50, "back_distill"): [3.09, 3.09, 4.12, 2.06, 4.64, 3.40],
    (3, 20, "direct_learn"): [22.16, 25.77, 32.99, 22.68, 22.16, 25.15],
    (3, 20, "back_distill"): [7.22, 6.70, 7.22, 2.58, 5.15, 5.77],
    (3, 10, "direct_learn"): [36.08, 32.99, 31.96, 34.54, 34.02, 33.92],
    (3, 10, "back_distill"): [8.25, 15.46, 10.31, 13.92, 10.31, 11.65],
    (3, 0, "back_distill"): [50.00, 50.00, 50.00, 49.48, 50.00, 49.90],
}
_T3_CLS = {  # Table 3 top: error rate (%), 3-conv adapter into the dog's classification module
    (3, 100, "direct_learn"): [20.10, 12.37, 18.56, 11.86, 15.72],
    (3, 100, "back_distill"): [9.79, 5.67, 8.25, 4.64, 7.09],
    (3, 50, "direct_learn"): [22.68, 19.59, 19.07, 14.95, 19.07],
    (3, 50, "back_distill"): [10.82, 18.04, 13.92, 5.15, 11.98],
    (3, 20, "direct_learn"): [31.96, 37.11, 39.69, 35.57, 36.08],
    (3, 20, "back_distill"): [21.13, 35.57, 32.47, 22.68, 27.96],
    (3, 10, "direct_learn"): [41.75, 37.63, 44.33, 33.51, 39.31],
    (3, 10, "back_distill"): [34.02, 42.27, 44.85, 33.51, 38.66],
}
_T3_SEG = {  # Table 3 bottom: pixel accuracy (%), 1-conv adapter into the dog's segmentation module
    (1, 100, "direct_learn"): [76.54, 74.60, 81.00, 78.37, 77.63],
    (1, 100, "distill"): [74.65, 80.18, 78.05, 80.50, 78.35],
    (1, 100, "back_distill"): [85.17, 90.04, 90.13, 86.53, 87.97],
    (1, 50, "direct_learn"): [71.30, 74.76, 76.83, 78.47, 75.34],
    (1, 50, "distill"): [68.32, 76.50, 78.58, 80.62, 76.01],
    (1, 50, "back_distill"): [83.14, 90.02, 90.46, 85.58, 87.30],
    (1, 20, "direct_learn"): [71.13, 74.82, 76.83, 77.81, 75.15],
    (1, 20, "distill"): [71.17, 74.82, 76.05, 78.10, 75.04],
    (1, 20, "back_distill"): [84.03, 88.37, 89.22, 85.01, 86.66],
    (1, 10, "direct_learn"): [70.46, 74.74, 76.49, 78.25, 74.99],
    (1, 10, "distill"): [70.47, 74.74, 76.83, 78.32, 75.09],
    (1, 10, "back_distill"): [82.32, 89.49, 85.97, 83.50, 85.32],
}
_T4_CLS = {  # Table 4 top: error rate (%), leave-one-out generic classification module
    (3, 100, "direct_learn"): [14.43, 20.62, 17.01, 11.86, 15.98],
    (3, 100, "back_distill"): [5.67, 3.61, 6.70, 2.58, 4.64],
    (3, 50, "direct_learn"): [21.13, 23.71, 15.46, 10.31, 17.65],
    (3, 50, "back_distill"): [7.22, 9.28, 8.76, 5.67, 7.73],
    (3, 20, "direct_learn"): [25.26, 24.23, 39.18, 23.71, 28.10],
    (3, 20, "back_distill"): [17.01, 19.59, 23.71, 14.95, 18.82],
    (3, 10, "direct_learn"): [42.27, 36.60, 40.72, 39.18, 39.69],
    (3, 10, "back_distill"): [42.27, 32.99, 28.35, 30.41, 33.51],
}
_T4_SEG = {  # Table 4 bottom: pixel accuracy (%), leave-one-out generic segmentation module
    (1, 10, "direct_learn"): [64.97, 69.65, 80.26, 69.87, 71.19],
    (1, 10, "back_distill"): [74.59, 83.51, 82.08, 80.21, 80.10],
    (1, 20, "direct_learn"): [68.69, 81.02, 71.88, 72.65, 73.56],
    (1, 20, "back_distill"): [73.34, 84.78, 81.40, 81.04, 80.14],
}

# (experiment, metric) -> table
PAPER: dict[tuple[str, str], dict[tuple[int, int, str], dict[str, float]]] = {
    ("exp1", "error_rate"): {k: _row(PAPER_CATS, v) for k, v in _T2.items()},
    ("exp2", "error_rate"): {k: _row(PAPER_TRANSPLANT_CATS, v) for k, v in _T3_CLS.items()},
    ("exp3", "pixel_accuracy"): {k: _row(PAPER_TRANSPLANT_CATS, v) for k, v in _T3_SEG.items()},
    ("table4_cls", "error_rate"): {k: _row(PAPER_TRANSPLANT_CATS, v) for k, v in _T4_CLS.items()},
    ("table4_seg", "pixel_accuracy"): {k: _row(PAPER_TRANSPLANT_CATS, v) for k, v in _T4_SEG.items()},
}


def paper_value(experiment: str, metric: str, adapter_layers: int, samples: int, method: str,
                category: str) -> float | None:
    return PAPER.get((experiment, metric), {}).get((adapter_layers, samples, method), {}).get(category)
