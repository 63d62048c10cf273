"""Prediction with trained nnU-Net models: ``pu-nnunet predict``.

``predict.predict`` segments NIfTI files, folders of them or DICOM series folders with a trained
model folder, through nnU-Net's own reader, preprocessing and export; 2d models run many slices
per forward pass (``sliding_window_2d``). Importing this package loads neither torch nor nnU-Net.
"""

from pu_nnunet.inference.errors import PredictionError

__all__ = ["PredictionError"]
