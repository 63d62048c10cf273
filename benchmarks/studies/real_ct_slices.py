"""The AMOS-style slice pipeline on real anatomy and real HU (issue 27): one patient's CT from
``../shared/data/real-ct`` (TotalSegmentator's model-made labels: a pseudo-reference; see its
NOTICE.md), through the package's own commands:

1. an ``amos22/`` folder in AMOS 2022's own layout: the 3 mm CT (30 slices) cut into 5 slabs of 6
   slices, TotalSegmentator's classes mapped to AMOS's 15 organ ids; slabs 1, 2, 4, 5 as AMOS
   training cases, the middle slab 3 as the official validation case;
2. ``pu-nnunet convert amos`` (fold 0 of its split = training slabs / validation slab);
3. ``pu-nnunet study run --held-out validation``: PURe and its baseline at the converged CPU
   schedule (``_50epochs``), nnU-Net's 2d configuration, CPU plans; scored on the validation slab;
4. the real DICOM series (another scan of the same patient, 2 mm slices of 0.98 mm pixels) through
   ``pu-nnunet predict --output-format dicom-seg`` with each trained model, and ``pu-nnunet
   evaluate`` against TotalSegmentator's labels of that series (stored in another voxel order:
   evaluate aligns it).

One patient and model-made labels: this shows the pipeline works end to end on real data; it is
no accuracy claim, and neither is the difference between the two networks here.

    python benchmarks/studies/real_ct_slices.py --work /path/to/scratch --study benchmarks/studies/realct_slices

The work folder holds nnU-Net's folders, the models and the predictions (kept out of the
repository); the study folder gets the study's report plus ``dicom_series/`` (evaluation reports
and the DICOM SEG check). Re-running resumes: finished steps are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np

from pu_nnunet.datasets.converters.amos import AMOS_LABEL_NAMES, amos_labels_from_totalsegmentator
from pu_nnunet.json_files import write_json
from pu_nnunet.user_files import work_names

REAL_CT = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-ct"
DATASET_ID, DATASET_NAME = 953, "RealCTSlabs"
SLABS, VALIDATION_SLAB = 5, 3
TRAINERS = ("nnUNetTrainerPURe_50epochs", "nnUNetTrainerPUReBaseline_50epochs")
PLANS = "nnUNetPlansCPU"


def run(command: list[str], env: dict, log: Path) -> None:
    print("$", " ".join(command), flush=True)
    with open(log, "a") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}; log {log}")


def totalsegmentator_names(real_ct: Path) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((real_ct / "totalsegmentator_total_labels.json").read_text()).items()}


def write_amos_folder(real_ct: Path, target: Path) -> Path:
    """amos22/ with the 3 mm CT as 5 slabs (AMOS ids), written once."""
    if (target / "dataset.json").is_file():
        return target
    work, _ = work_names(target.parent, target.name)  # the package's temporary name, swept when a run was killed
    image = nibabel.load(real_ct / "ct_abdomen_3mm.nii.gz")
    labels = nibabel.load(real_ct / "ct_abdomen_3mm_totalseg.nii.gz")
    mapped = nibabel.Nifti1Image(amos_labels_from_totalsegmentator(np.asanyarray(labels.dataobj),
                                                                   totalsegmentator_names(real_ct)),
                                 labels.affine, labels.header)
    mapped.set_data_dtype(np.uint8)
    depth = image.shape[2]
    bounds = np.linspace(0, depth, SLABS + 1).round().astype(int)
    for slab in range(1, SLABS + 1):
        part = "Va" if slab == VALIDATION_SLAB else "Tr"
        for folder in (f"images{part}", f"labels{part}"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        z = slice(bounds[slab - 1], bounds[slab])
        # nibabel's slicer moves the affine's origin with the cut: each slab keeps its place in space
        nibabel.save(image.slicer[:, :, z], work / f"images{part}" / f"amos_{slab:04d}.nii.gz")
        nibabel.save(mapped.slicer[:, :, z], work / f"labels{part}" / f"amos_{slab:04d}.nii.gz")
    write_json(work / "dataset.json", {"labels": dict(enumerate(AMOS_LABEL_NAMES))})
    work.rename(target)
    return target


def dicom_reference(real_ct: Path, target: Path) -> Path:
    """TotalSegmentator's labels of the DICOM series in AMOS ids, named as predict names the series."""
    path = target / "dicom_series.nii.gz"
    if not path.is_file():
        target.mkdir(parents=True, exist_ok=True)
        labels = nibabel.load(real_ct / "dicom_series_totalseg.nii.gz")
        mapped = amos_labels_from_totalsegmentator(np.asanyarray(labels.dataobj), totalsegmentator_names(real_ct))
        image = nibabel.Nifti1Image(mapped, labels.affine, labels.header)
        image.set_data_dtype(np.uint8)
        nibabel.save(image, path)
    return path


def check_dicom_seg(predictions: Path, series: Path, target: Path) -> dict:
    """The DICOM SEG beside the NIfTI: its segments, and per label its voxels rebuilt from the SEG's
    frames (each frame placed by the slice it references) against the NIfTI's; written as
    ``dicom_seg_check.json``."""
    import highdicom
    import pydicom
    import SimpleITK as sitk

    seg = highdicom.seg.segread(predictions / "dicom_series_seg.dcm")
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / "dicom_series.nii.gz")))
    slices = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(series.iterdir()) if path.is_file()]
    position_of = {s.file_meta.MediaStorageSOPInstanceUID: float(s.ImagePositionPatient[2]) for s in slices}
    order = {z: index for index, z in enumerate(sorted(set(position_of.values())))}
    labels = json.loads((predictions / "dataset.json").read_text())["labels"]
    label_of_segment = {s.SegmentNumber: labels[s.SegmentLabel] for s in seg.SegmentSequence}
    rebuilt = np.zeros_like(nifti)
    pixels = seg.pixel_array
    for frame, groups in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        rebuilt[order[position_of[source]]][pixels[frame] > 0] = label_of_segment[segment]
    # the NIfTI's slice order is the series' order along z (SimpleITK's reader sorts by position)
    check = {"segments": [f"{s.SegmentNumber}: {s.SegmentLabel}" for s in seg.SegmentSequence],
             "frames": int(seg.NumberOfFrames), "series_slices": len(slices),
             "voxels_per_label_nifti": {int(v): int((nifti == v).sum()) for v in np.unique(nifti) if v},
             "voxels_per_label_seg": {int(v): int((rebuilt == v).sum()) for v in np.unique(rebuilt) if v},
             "seg_equals_nifti": bool(np.array_equal(rebuilt, nifti))}
    target.mkdir(parents=True, exist_ok=True)
    write_json(target / "dicom_seg_check.json", check)
    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="scratch: nnU-Net folders, models, predictions")
    parser.add_argument("--study", required=True, type=Path, help="the study folder (reports)")
    parser.add_argument("--real-ct", type=Path, default=REAL_CT)
    parser.add_argument("--cpu-jobs", type=int, default=2)
    args = parser.parse_args()
    work, study = args.work.resolve(), args.study.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"))
    bin_dir = Path(sys.executable).parent
    pu = str(bin_dir / "pu-nnunet")
    log = work / "real_ct_slices.log"

    source = write_amos_folder(args.real_ct, work / "amos22")
    if not any((work / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*")):
        run([pu, "convert", "amos", str(source), "-d", str(DATASET_ID), "--name", DATASET_NAME], env, log)
    run([pu, "study", "run", "-o", str(study), "-d", str(DATASET_ID), "-c", "2d", "-p", PLANS,
         "--trainers", *TRAINERS, "--baseline", TRAINERS[1], "--held-out", "validation",
         "--devices", "cpu", "--cpu-threads", "1", "--cpu-jobs", str(args.cpu_jobs)], env, log)

    reference = dicom_reference(args.real_ct, work / "dicom_reference")
    results = work / "nnUNet_results" / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    for trainer in TRAINERS:
        model = results / f"{trainer}__{PLANS}__2d"
        predictions = work / "dicom_predictions" / trainer
        if not (predictions / "dicom_series.nii.gz").is_file():
            run([pu, "predict", "-i", str(args.real_ct / "dicom_series"), "-o", str(predictions), "-m", str(model),
                 "-f", "0", "--device", "cpu", "--output-format", "dicom-seg", "--overwrite"], env, log)
        out = study / "dicom_series" / trainer
        run([pu, "evaluate", str(predictions), str(reference.parent), "-o", str(out), "--device", "cpu",
             "--overwrite"], env, log)
        check = check_dicom_seg(predictions, args.real_ct / "dicom_series", out)
        print(f"{trainer}: DICOM SEG {check['frames']} frames, segments {check['segments']}, "
              f"voxels equal to the NIfTI: {check['seg_equals_nifti']}")
    print(f"study report: {study / 'report.md'}; DICOM series: {study / 'dicom_series'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
