"""``pu-nnunet predict -i INPUT -o OUTPUT_DIR -m MODEL_DIR``: segment CT volumes with a trained model."""

from __future__ import annotations

import argparse

from pu_nnunet.devices import add_device_argument

HELP = ("Segment NIfTI volumes or a DICOM series with a trained nnU-Net model folder (2d models: many slices "
        "per forward pass); agrees with nnUNetv2_predict.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, metavar="INPUT",
                        help="a NIfTI file (.nii, .nii.gz), a folder of them (CASE_0000.nii.gz or CASE.nii.gz), or "
                             "a folder holding a DICOM series")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT_DIR",
                        help="folder for the segmentations, CASE.nii.gz, with each input's geometry")
    parser.add_argument("-m", "--model", required=True, metavar="MODEL_DIR",
                        help="trained model folder: nnUNet_results/DatasetX/<trainer>__<plans>__<configuration>")
    parser.add_argument("-f", "--folds", nargs="+", metavar="F",
                        help="folds to ensemble (numbers or 'all'; default: every fold_N with the checkpoint)")
    add_device_argument(parser, "where the network runs")
    parser.add_argument("--chk", "-chk", default="checkpoint_final.pth", metavar="NAME",
                        help="checkpoint file in each fold folder (default checkpoint_final.pth)")
    parser.add_argument("--disable_tta", action="store_true",
                        help="no mirroring test-time augmentation (faster, as nnUNetv2_predict --disable_tta)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="auto (default): nnU-Net's choice, fp16 autocast on CUDA and float32 on the CPU; bf16: "
                             "bfloat16 autocast (CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16); fp32: no autocast "
                             "(2d models on CUDA). Lower precision changes a few voxels: see benchmarks/bench_predict.py")
    parser.add_argument("--tta-axes", type=int, nargs="*", metavar="AXIS",
                        help="mirror only along these spatial axes of the patch (a subset of the model's, from 0): "
                             "each axis left out halves the work; no axes = --disable_tta")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="where the network runs: torch (default) or onnxruntime, with the export given by --onnx "
                             "(pip install \"pu-nnunet[onnx]\"); reading, preprocessing, tiling, TTA and export are "
                             "nnU-Net's either way")
    parser.add_argument("--onnx", metavar="FILE",
                        help="with --backend onnxruntime: the .onnx file (or the .json beside it) written by "
                             "pu-nnunet export-onnx for MODEL_DIR; its folds are the default folds")
    parser.add_argument("--cpu-optimise", choices=("none", "channels-last", "freeze", "compile"), default="none",
                        help="--backend torch on the CPU: run the network as channels-last, frozen TorchScript "
                             "(jit.trace + freeze) or torch.compile (inductor; needs a C++ compiler, compiles on the "
                             "first two batch sizes); falls back to eager with a warning where it cannot be applied. "
                             "none (default): eager. On the benchmark's network only compile with one fold (inductor's "
                             "freezing) was faster, 1.44x per forward pass after 20-36 s of compiling per batch size; "
                             "channels-last and compile change the logits' last bits (a voxel can flip). See "
                             "benchmarks/bench_predict_forward.py")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="2d models: patches per forward pass (default: on a GPU as many as fit a memory budget; "
                             "on a CPU "
                             "the fastest of 1, 2, 4, 8, timed on the first tiles)")
    parser.add_argument("--output-format", choices=("nifti", "dicom-seg"), default="nifti",
                        help="nifti (default): CASE.nii.gz; dicom-seg (DICOM series input only): also CASE_seg.dcm, "
                             "a DICOM SEG referencing the series, segments named from dataset.json, the model "
                             "identified (pip install \"pu-nnunet[dicom]\")")
    parser.add_argument("--no-nifti", dest="nifti", action="store_false",
                        help="with --output-format dicom-seg: write the DICOM SEG only, no CASE.nii.gz beside it")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write CASE.npz (softmax probabilities) and CASE.pkl beside each segmentation, as "
                             "nnUNetv2_predict --save_probabilities (operating points over probability thresholds: "
                             "pu-nnunet evaluate --operating-points)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--overwrite", action="store_true", help="replace segmentations already in OUTPUT_DIR")
    # --continue_prediction and --c: nnUNetv2_predict's spellings
    resume.add_argument("--continue", "--continue_prediction", "--c", dest="continue_prediction", action="store_true",
                        help="resume an interrupted run: keep the complete segmentations already in OUTPUT_DIR, "
                             "predict the others (as nnUNetv2_predict --continue_prediction)")


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as run (options as parsed), for the run record in OUTPUT_DIR/provenance.json."""
    line = ["pu-nnunet", "predict", "-i", str(args.input), "-o", str(args.output), "-m", str(args.model)]
    if args.folds:
        line += ["-f", *map(str, args.folds)]
    line += ["--device", str(args.device), "--chk", args.chk, "--precision", args.precision, "--backend", args.backend]
    line += ["--cpu-optimise", args.cpu_optimise] if args.cpu_optimise != "none" else []
    if args.onnx is not None:
        line += ["--onnx", str(args.onnx)]
    if args.tta_axes is not None:
        line += ["--tta-axes", *map(str, args.tta_axes)]
    flags = {"--disable_tta": args.disable_tta, "--overwrite": args.overwrite,
             "--continue": args.continue_prediction, "--save_probabilities": args.save_probabilities}
    line += [flag for flag, given in flags.items() if given]
    line += ["--output-format", args.output_format] if args.output_format != "nifti" else []
    line += [] if args.nifti else ["--no-nifti"]
    return line + (["--batch-size", str(args.batch_size)] if args.batch_size is not None else [])


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (OUTPUT_DIR): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.output]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.predict import predict

    if args.batch_size is not None and args.batch_size < 1:
        raise PredictionError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.disable_tta and args.tta_axes:
        raise PredictionError("--disable_tta and --tta-axes contradict each other; give one")
    result = predict(args.input, args.output, args.model, folds=args.folds, device=args.device, checkpoint=args.chk,
                     use_mirroring=not args.disable_tta, batch_size=args.batch_size, overwrite=args.overwrite,
                     continue_prediction=args.continue_prediction, argv=_command_line(args),
                     precision=args.precision, tta_axes=args.tta_axes, backend=args.backend, onnx=args.onnx,
                     output_format=args.output_format, nifti=args.nifti, save_probabilities=args.save_probabilities,
                     cpu_optimise=args.cpu_optimise)
    kept = f" (kept {len(result.skipped)} complete one(s))" if result.skipped else ""
    print(f"wrote {len(result.outputs)} segmentation(s) to {args.output} in {result.loop_seconds:.1f} s{kept}")
    if result.outputs:
        print(step_times_line(result))
    return 0


def step_times_line(result) -> str:
    """Where the time went: busy seconds per step (reading and exporting run beside the sliding
    window, so they add up to more than the wall time) and the waits the overlap did not hide."""
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result.step_seconds.items())
    return (f"step times: {steps}; waited {result.waiting_seconds:.1f} s for reading or export; "
            f"cases {result.loop_seconds:.1f} s wall")
