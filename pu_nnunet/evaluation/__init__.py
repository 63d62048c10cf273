"""Evaluation and reports: Dice, IoU and case-level false-positive rate of nnU-Net predictions.

``evaluate_folders`` scores a prediction folder against references (numpy on CPU, torch on
CUDA) and writes metrics.json, per_case.csv, report.md and plots; ``compare_evaluations``
sets two evaluations side by side with paired statistics.
"""

from pu_nnunet.evaluation.compare import compare_evaluations
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.evaluate import evaluate_folders

__all__ = ["evaluate_folders", "compare_evaluations", "EvaluationError"]
