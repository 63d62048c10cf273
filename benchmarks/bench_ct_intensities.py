"""Is the synthetic CT CT-like? HU statistics of body, liver and spleen: real scan vs generator.

The real scan is ``../shared/data/real-ct/ct_abdomen_3mm.nii.gz`` with TotalSegmentator's
model-made organ labels (a pseudo-reference, one patient: see that folder's NOTICE.md); the
synthetic volumes are ``pu-nnunet synth ct``'s generator at its defaults. For each of body
(voxels above ``BODY_THRESHOLD_HU``), liver and spleen it prints the voxel count and the 5th,
25th, 50th, 75th and 95th HU percentiles, writes them to JSON and draws the histograms.

    python benchmarks/bench_ct_intensities.py [--real-ct-dir ../shared/data/real-ct]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
DEFAULT_REAL_DIR = REPO.parent / "shared" / "data" / "real-ct"
# air is about -1000 HU and lung about -850: above -500 is body tissue (fat, organs, bone)
BODY_THRESHOLD_HU = -500.0
PERCENTILES = (5, 25, 50, 75, 95)
# TotalSegmentator "total" task label ids (totalsegmentator_total_labels.json)
REAL_LABELS = {"liver": 5, "spleen": 1}
# the generator's organ order (pu_nnunet.datasets.synthetic.ct.ORGANS): labels 1, 2, ...
SYNTHETIC_LABELS = {"liver": 1, "spleen": 2}
SYNTHETIC_CASES, SYNTHETIC_SEED = 8, 0


def stats(values: np.ndarray) -> dict:
    return {"voxels": int(values.size), **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}}


def regions(image: np.ndarray, labels: np.ndarray, label_ids: dict) -> dict[str, np.ndarray]:
    found = {"body": image[image > BODY_THRESHOLD_HU]}
    found.update({name: image[labels == value] for name, value in label_ids.items()})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-ct-dir", default=str(DEFAULT_REAL_DIR))
    parser.add_argument("--output", default=str(RESULTS_DIR / "ct_intensities.json"))
    args = parser.parse_args()

    import SimpleITK as sitk
    from pu_nnunet.datasets.synthetic.ct import synthesize_case

    real_dir = Path(args.real_ct_dir)
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(real_dir / "ct_abdomen_3mm.nii.gz"))).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(real_dir / "ct_abdomen_3mm_totalseg.nii.gz")))
    real = regions(image, labels, REAL_LABELS)

    rng = np.random.default_rng(SYNTHETIC_SEED)
    pooled: dict[str, list[np.ndarray]] = {}
    for _ in range(SYNTHETIC_CASES):
        synth_image, synth_labels = synthesize_case(rng, (24, 64, 64), num_organs=3, absent_organ=None)
        for name, values in regions(synth_image.astype(np.float32), synth_labels, SYNTHETIC_LABELS).items():
            pooled.setdefault(name, []).append(values)
    synthetic = {name: np.concatenate(parts) for name, parts in pooled.items()}

    result = {"real": {k: stats(v) for k, v in real.items()}, "synthetic": {k: stats(v) for k, v in synthetic.items()},
              "body_threshold_hu": BODY_THRESHOLD_HU, "synthetic_cases": SYNTHETIC_CASES,
              "real_source": "ct_abdomen_3mm.nii.gz with TotalSegmentator's labels (model-made, one patient)"}
    header = "| region | source | voxels | " + " | ".join(f"p{p} HU" for p in PERCENTILES) + " |"
    print(header)
    print("|---|---|---:|" + "---:|" * len(PERCENTILES))
    for name in real:
        for source in ("real", "synthetic"):
            s = result[source][name]
            print(f"| {name} | {source} | {s['voxels']} | " + " | ".join(f"{s[f'p{p}']:.0f}" for p in PERCENTILES) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(real), figsize=(4 * len(real), 3.2))
    for axis, name in zip(axes, real):
        bins = np.linspace(-200 if name != "body" else BODY_THRESHOLD_HU, 400, 61)
        for source, values in (("real", real[name]), ("synthetic", synthetic[name])):
            axis.hist(np.clip(values, bins[0], bins[-1]), bins=bins, density=True, alpha=0.5, label=source)
        axis.set_title(name)
        axis.set_xlabel("HU")
    axes[0].legend()
    figure.tight_layout()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output.with_suffix(".png"), dpi=80)
    from pu_nnunet.evaluation.jsonio import write_json

    write_json(output, result)
    print(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
