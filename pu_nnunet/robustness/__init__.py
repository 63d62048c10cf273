"""Segmentation robustness: predict held-out cases of trained models under image corruptions of
several strengths and compare the trainers' Dice and false-positive rates (``pu-nnunet robustness``)."""

from pu_nnunet.robustness.corruptions import CORRUPTIONS, DEFAULT_STRENGTHS, corrupt, intensity_model

__all__ = ["CORRUPTIONS", "DEFAULT_STRENGTHS", "corrupt", "intensity_model"]
