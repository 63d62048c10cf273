"""The counting core: one confusion matrix per case, equal on numpy, torch-CPU and CUDA."""

import numpy as np
import pytest
import torch

from pu_nnunet.devices import DeviceError
from pu_nnunet.evaluation.metrics.confusion import (MAX_DIRECT_LABEL_VALUE, as_label_map, counting_device,
                                                    label_confusion)
from pu_nnunet.evaluation.errors import EvaluationError


def _mask_counts(pred, ref, labels):
    """TP/FP/FN of the union of ``labels``, the way nnU-Net builds them: one mask per label set."""
    p, r = np.isin(pred, labels), np.isin(ref, labels)
    return {"tp": int((p & r).sum()), "fp": int((p & ~r).sum()), "fn": int((~p & r).sum()),
            "n_pred": int(p.sum()), "n_ref": int(r.sum())}


def test_hand_counted_matrix():
    pred = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    ref = np.array([[0, 1, 1], [2, 0, 0]], np.uint8)
    confusion = label_confusion(pred, ref, "cpu")
    # rows: prediction 0, 1, 2; columns: reference 0, 1, 2
    np.testing.assert_array_equal(confusion.matrix, [[2, 0, 0], [0, 1, 0], [1, 1, 1]])
    assert confusion.counts([1]) == {"tp": 1, "fp": 0, "fn": 1, "n_pred": 1, "n_ref": 2}
    assert confusion.counts([2]) == {"tp": 1, "fp": 2, "fn": 0, "n_pred": 3, "n_ref": 1}
    assert confusion.counts([1, 2]) == {"tp": 3, "fp": 1, "fn": 0, "n_pred": 4, "n_ref": 3}
    assert confusion.present_labels() == {0, 1, 2}


@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
@pytest.mark.parametrize("dtype,top", [(np.uint8, 15), (np.uint16, 1000)])
def test_counts_match_per_label_masks(device, dtype, top):
    rng = np.random.default_rng(3)
    values = np.array([0, 1, 2, 5, top], dtype)  # top > MAX_DIRECT_LABEL_VALUE takes the remapping path
    ref = values[rng.integers(0, len(values), size=(7, 9, 11))]
    pred = values[rng.integers(0, len(values), size=(7, 9, 11))]
    confusion = label_confusion(pred, ref, device)
    assert confusion.matrix.sum() == ref.size
    for labels in ([1], [2], [5], [int(top)], [3], [1, 2, 5, int(top)]):
        assert confusion.counts(labels) == _mask_counts(pred, ref, labels), labels
    assert (top > MAX_DIRECT_LABEL_VALUE) == (len(confusion.values) == 5)


def test_ignore_label_drops_reference_voxels():
    pred = np.array([1, 1, 0, 1], np.uint8)
    ref = np.array([1, 3, 3, 0], np.uint8)
    counts = label_confusion(pred, ref).without_reference(3).counts([1])
    # the two voxels with reference 3 are ignored: TP at voxel 0, FP at voxel 3
    assert counts == {"tp": 1, "fp": 1, "fn": 0, "n_pred": 2, "n_ref": 1}


def test_as_label_map_converts_and_rejects():
    converted = as_label_map(np.array([0.0, 2.0, 7.0], np.float32), "x")
    assert converted.dtype == np.uint8 and converted.tolist() == [0, 2, 7]
    assert as_label_map(np.array([0.0, 300.0]), "x").dtype == np.uint16
    with pytest.raises(EvaluationError, match="case7: non-integer"):
        as_label_map(np.array([0.0, 0.5]), "case7")
    with pytest.raises(EvaluationError, match="negative"):
        as_label_map(np.array([-1.0, 1.0]), "case7")


def test_counting_device():
    assert counting_device("cpu") == "cpu"
    assert counting_device("torch-cpu") == "torch-cpu"
    assert counting_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="--device 'tpu' is not a device"):
        counting_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device 'cuda:0': torch sees no CUDA GPU"):
            counting_device("cuda:0")


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"same shape: pred \(2, 3\), ref \(3, 2\)"):
        label_confusion(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
def test_cuda_counts_equal_numpy():
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 16, size=(20, 64, 64), dtype=np.uint8)
    pred = rng.integers(0, 16, size=(20, 64, 64), dtype=np.uint8)
    np.testing.assert_array_equal(label_confusion(pred, ref, "cuda").matrix, label_confusion(pred, ref, "cpu").matrix)
