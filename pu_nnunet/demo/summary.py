"""The demo's closing table: PURe next to its matched baseline, and where the outputs are."""

from __future__ import annotations

from pathlib import Path

from pu_nnunet.evaluation.report.evaluation_outputs import REPORT_FILE
from pu_nnunet.evaluation.report.markdown import number, table

FOREGROUND = "foreground"
# digits of the console summary: scores to 0.001, rates to 0.01, seconds whole
SCORE_DIGITS, RATE_DIGITS, SECONDS_DIGITS = 3, 2, 0


def count_parameters(checkpoint_path: Path) -> int:
    import torch

    weights = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["network_weights"]
    # a state dict names some tensors twice (ConvDropoutNormReLU's conv is also all_modules.0, the
    # decoder holds the encoder); torch.save keeps such aliases sharing storage, so count storages
    unique = {t.untyped_storage().data_ptr(): t.numel() for t in weights.values() if t.is_floating_point()}
    return int(sum(unique.values()))


def summary_rows(pure: dict, baseline: dict) -> list[tuple[str, ...]]:
    rows = []
    for key in [str(label) for label in pure["labels"]] + [FOREGROUND]:
        a, b = pure["aggregates"][key], baseline["aggregates"][key]
        name = pure["label_names"].get(key, key) if key != FOREGROUND else "foreground (all organs)"
        score, rate = (lambda value: number(value, SCORE_DIGITS)), (lambda value: number(value, RATE_DIGITS))
        rows.append((name, score(a["dice_mean"]), score(b["dice_mean"]), score(a["iou_mean"]), score(b["iou_mean"]),
                     rate(a["false_positive_rate"]), rate(b["false_positive_rate"])))
    return rows


def format_summary(result: dict, demo) -> str:
    pure, baseline = result["first"], result["second"]
    first, second = demo.s.runs
    header = ("label", f"Dice {first}", f"Dice {second}", f"IoU {first}", f"IoU {second}", f"FPR {first}",
              f"FPR {second}")
    scores = table(header, summary_rows(pure, baseline))
    timings = result["timings"]
    cost = table(("run", "trainer", "parameters", "training s", "prediction s"), [
        (name, trainer, f"{count_parameters(demo.fold_folder(trainer) / 'checkpoint_final.pth'):,}",
         number(timings.get(f"train_{name}"), SECONDS_DIGITS), number(timings.get(f"predict_{name}"), SECONDS_DIGITS))
        for name, trainer in demo.s.runs.items()])
    n_cases = pure["n_reference_cases"]
    folder, jobs = demo.folder, {name: demo.job(name) for name in demo.s.runs}
    comparison = Path(result["comparison"]["comparison_dir"])
    where = "\n".join([
        f"  work folder:      {demo.workdir}",
        f"  nnU-Net results:  {demo.results}",
        f"  predictions:      {folder.predictions(jobs[first])}, {folder.predictions(jobs[second])}",
        f"  reports:          {folder.evaluation(jobs[first]) / REPORT_FILE}, "
        f"{folder.evaluation(jobs[second]) / REPORT_FILE}",
        f"  comparison:       {comparison / REPORT_FILE} (paired statistics, plots)",
        f"  study report:     {folder.report} (`pu-nnunet study status {demo.workdir}`)",
        f"  logs:             {folder.train_log(jobs[first])}, ... (one folder per run)",
    ])
    return (f"\nHeld-out synthetic CT volumes: {n_cases}, scored per 3D case "
            f"(Dice/IoU: mean over cases containing the label; FPR: share of cases without the label "
            f"where it was predicted).\n\n{scores}\n\n{cost}\n\nWhere everything is:\n{where}\n")
