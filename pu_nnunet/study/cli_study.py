"""``pu-nnunet study run|status|report|plan``: trainers x folds x repeats through nnU-Net, with a report;
``plan`` gives the paired runs a study needs before it is run."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pu_nnunet.devices import add_devices_argument
from pu_nnunet.study.logs import configure_logging

HELP = ("run a study: several trainers (default PURe and its baseline) over folds and repeats through "
        "nnU-Net's own commands, on the CPU, several GPUs or SLURM, with a paired-statistics report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study_command", metavar="{run,status,report,plan}")
    sub.required = True
    run_parser = sub.add_parser("run", help="run (or resume) a study and write its report",
                                description="Runs every unfinished job of a study, then writes "
                                            "STUDY_DIR/report.md, summary.json and plots/. Re-running skips "
                                            "finished jobs, resumes interrupted trainings and retries failed ones.")
    _add_study_flags(run_parser)
    _add_statistics_flags(run_parser, "(stored in study.json)")
    _add_robustness_flags(run_parser)
    _add_executor_flags(run_parser)
    status_parser = sub.add_parser("status", help="every job of a study: state, attempts, duration, log")
    status_parser.add_argument("study_dir", metavar="STUDY_DIR")
    report_parser = sub.add_parser("report", help="rewrite the report from the finished runs")
    report_parser.add_argument("study_dir", metavar="STUDY_DIR")
    _add_statistics_flags(report_parser, "(default: the study's, stored in study.json)")
    _add_plan_parser(sub)


def _add_statistics_flags(parser: argparse.ArgumentParser, default: str) -> None:
    from pu_nnunet.evaluation.metrics.run_stats import DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID

    group = parser.add_argument_group("the report's statistics")
    group.add_argument("--mid", type=float, metavar="D",
                       help="minimal important difference in Dice: the report gives the paired runs at which the "
                            f"run-level test reaches 80%% power against it {default}; TOML key mid; default "
                            f"{DEFAULT_MID}")
    group.add_argument("--equivalence-margin", dest="equivalence_margin", type=float, metavar="M",
                       help="equivalence margin in Dice: the report says 'equivalent within ±M' only when both "
                            f"one-sided t-tests (TOST) reject {default}; TOML key equivalence_margin; default "
                            f"{DEFAULT_EQUIVALENCE_MARGIN}")


def _add_plan_parser(sub) -> None:
    from pu_nnunet.evaluation.metrics.run_stats import ALPHA, DEFAULT_MID, TARGET_POWER

    plan = sub.add_parser(
        "plan", help="paired runs needed before anything is trained (prospective power)",
        description=f"Prints the paired runs (trainer vs baseline, same fold and repeat) at which the report's "
                    f"run-level test, the two-sided sign-flip test at the Holm worst-case level {ALPHA} / m for a "
                    f"family of m tests, reaches {TARGET_POWER:.0%} power against a true difference of --mid, for "
                    "between-run sds given with --sd or taken from a pilot study (its observed sd and the 80% and "
                    "95% upper confidence bounds).")
    plan.add_argument("study_dir", nargs="?", metavar="STUDY_DIR",
                      help="a pilot study with a report (summary.json or run_level.json): its between-run sds of the "
                           "foreground difference and its family size")
    plan.add_argument("--sd", nargs="+", type=float, metavar="SD",
                      help="between-run sd(s) of the paired run differences (Dice); instead of or beside STUDY_DIR")
    plan.add_argument("--mid", type=float, metavar="D", help=f"minimal important difference (default: the pilot "
                                                             f"study's, else {DEFAULT_MID})")
    plan.add_argument("--family-size", dest="family_size", type=int, metavar="M",
                      help="tests in the report's Holm family (default: from --trainers and --labels, else from the "
                           "pilot study's report, else 1)")
    plan.add_argument("--trainers", type=int, metavar="N",
                      help="trainers compared with the baseline (family = N x (labels + 1 foreground))")
    plan.add_argument("--labels", type=int, metavar="N", help="labels of the dataset, background not counted")


def _add_study_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the study (stored in STUDY_DIR/study.json; omit to resume it)")
    group.add_argument("-o", "--output", dest="study_dir", required=True, metavar="STUDY_DIR",
                       help="the study folder (study.json, job states, runs, report)")
    group.add_argument("-d", dest="dataset_id", type=int, metavar="DATASET_ID", help="nnU-Net dataset id")
    group.add_argument("-c", dest="configuration", metavar="CONFIGURATION", help="nnU-Net configuration (default 2d)")
    group.add_argument("-p", dest="plans", metavar="PLANS",
                       help="plans identifier (default nnUNetPlans; nnUNetPlansCPU: nnUNetPlans narrowed for a CPU)")
    group.add_argument("--trainers", "-tr", nargs="+", metavar="TRAINER",
                       help="default nnUNetTrainerPURe nnUNetTrainerPUReBaseline")
    group.add_argument("--baseline", metavar="TRAINER",
                       help="the trainer the others are compared with (default: the one named ...Baseline...)")
    group.add_argument("--folds", "-f", nargs="+", type=int, metavar="F", help="default 0")
    group.add_argument("--repeats", type=int, metavar="N",
                       help="trainings per trainer and fold (default 1); repeat r >= 1 trains into "
                            "STUDY_DIR/results/repeat_r")
    group.add_argument("--held-out", dest="held_out", choices=("auto", "test", "validation"),
                       help="cases that score each run: test = imagesTs/labelsTs, validation = the fold's "
                            "validation cases (nnU-Net's fold_F/validation predictions); default auto = test "
                            "when the dataset has labelled test images")
    group.add_argument("--preset", choices=("demo",),
                       help="demo: built-in synthetic CT, CPU plans, the _demo trainers, fold 0")
    group.add_argument("--config", metavar="study.toml", help="the study as a TOML file (flags override it)")
    group.add_argument("--reconfigure", action="store_true",
                       help="accept flags that contradict STUDY_DIR/study.json and replace it (finished "
                            "jobs of the old study stay and are reused where they are the same job); also to "
                            "change or remove a stored robustness sweep (adding one needs no --reconfigure)")


def _add_robustness_flags(parser: argparse.ArgumentParser) -> None:
    from pu_nnunet.robustness import CORRUPTIONS, DEFAULT_STRENGTHS

    group = parser.add_argument_group(
        "robustness (stored in study.json)",
        "After its clean evaluation each job predicts its held-out cases again under image corruptions "
        "(as pu-nnunet robustness; the same corrupted images for every trainer and repeat) and the report gets "
        "a Robustness section. Adding --robustness to a finished study (no other change, no --reconfigure) runs "
        "only the sweeps: nothing is retrained and the clean results stay. Changing the stored sweep or removing "
        "it (--no-robustness) needs --reconfigure.")
    group.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=None,
                       help="run (or, with --no-robustness and --reconfigure, stop running) the sweep")
    group.add_argument("--robustness-corruptions", nargs="+", choices=tuple(CORRUPTIONS), metavar="CORRUPTION",
                       help=f"default all: {' '.join(CORRUPTIONS)}")
    group.add_argument("--robustness-strengths", nargs="+", metavar="CORRUPTION=S1,S2",
                       help="override strengths, e.g. poisson=1000,100 (defaults: "
                            + "; ".join(f"{k} {','.join(f'{v:g}' for v in vs)}" for k, vs in DEFAULT_STRENGTHS.items())
                            + ")")
    group.add_argument("--robustness-seed", type=int, metavar="N", help="noise seed (default 0)")
    group.add_argument("--robustness-disable-tta", action="store_true",
                       help="predict the sweep without mirroring (default: with it, as pu-nnunet robustness)")
    group.add_argument("--robustness-keep-inputs", action="store_true",
                       help="keep the corrupted images in runs/<job>/robustness/inputs (default: removed)")


def _robustness_value(args: argparse.Namespace) -> tuple[bool, dict | None]:
    """(given, settings) from the robustness flags; the others need --robustness."""
    from pu_nnunet.study.errors import StudyError
    from pu_nnunet.robustness.settings import sweep_settings

    details = {"--robustness-corruptions": args.robustness_corruptions,
               "--robustness-strengths": args.robustness_strengths, "--robustness-seed": args.robustness_seed,
               "--robustness-disable-tta": args.robustness_disable_tta or None,
               "--robustness-keep-inputs": args.robustness_keep_inputs or None}
    given = [flag for flag, value in details.items() if value is not None]
    if given and not args.robustness:
        raise StudyError(f"{given[0]} needs --robustness")
    if args.robustness is None:
        return False, None
    if not args.robustness:
        return True, None
    return True, sweep_settings(args.robustness_corruptions, args.robustness_strengths, args.robustness_seed,
                                mirroring=not args.robustness_disable_tta, keep_inputs=args.robustness_keep_inputs)


def _add_executor_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the jobs run")
    group.add_argument("--executor", choices=("local", "slurm"), help="default local")
    add_devices_argument(group, "local: where the jobs run, one job per GPU at a time (cpu alone: one at a time, "
                                "--cpu-jobs N for N)")
    group.add_argument("--cpu-threads", type=int, metavar="N",
                       help="local, cpu: torch threads of each job (its prediction and, with this package's "
                            "trainers, its training: nnU-Net uses every logical CPU); 1 is much faster on a "
                            "machine other jobs keep busy")
    group.add_argument("--cpu-jobs", type=int, metavar="N",
                       help="local, cpu: N jobs at once (default 1); with --cpu-threads T they use N x T cores: "
                            "several 1-thread jobs use a CPU better than one job with every thread")
    group.add_argument("--partition", help="slurm: partition")
    group.add_argument("--time-limit", type=int, metavar="MIN", help="slurm: time limit per job in minutes "
                                                                    "(default 1440)")
    group.add_argument("--gpus-per-job", type=int, metavar="N", help="slurm: GPUs per job (default 1; 0 trains on CPU)")
    group.add_argument("--cpus-per-job", type=int, metavar="N", help="slurm: CPUs per job")
    group.add_argument("--sbatch", nargs="+", default=[], metavar="KEY=VALUE",
                       help="slurm: extra sbatch options, e.g. --sbatch account=myproj qos=normal constraint=a100")
    group.add_argument("--signal-delay", type=int, metavar="S",
                       help="slurm: the warning signal (SIGUSR2) comes S seconds before the time limit; the "
                            "training saves its checkpoint and the job is requeued (default 120)")
    group.add_argument("--max-concurrent", type=int, metavar="N",
                       help="slurm: at most N jobs of the study's job array run at once (default: SLURM's "
                            "limit); with --slurm-backend local, default 1")
    group.add_argument("--max-attempts", type=int, metavar="N",
                       help="a job that fails N times (an error, not a time limit or preemption) is not run "
                            "again (default 3)")
    group.add_argument("--slurm-backend", choices=("slurm", "local"), default="slurm",
                       help="local: submitit's LocalExecutor runs the jobs on this machine through the same "
                            "machinery (try the slurm path without a cluster)")
    group.add_argument("--no-report", action="store_true", help="run the jobs only")


def _study_values(args: argparse.Namespace) -> tuple[dict, dict]:
    """The study's fields from --preset, then --config, then the flags (later ones win), and the
    TOML file's [executor] table."""
    from pu_nnunet.study.presets import PRESETS
    from pu_nnunet.robustness.settings import settings_from_toml
    from pu_nnunet.study.spec import read_toml

    values: dict = {}
    if args.preset:
        values.update(PRESETS[args.preset])
    executor = {}
    if args.config:
        content = read_toml(args.config)
        executor = content.pop("executor", {}) or {}
        if "dataset" in content:
            content["dataset_id"] = content.pop("dataset")
        if "robustness" in content:
            content["robustness"] = settings_from_toml(content["robustness"], args.config)
        values.update(content)
    flags = {"dataset_id": args.dataset_id, "configuration": args.configuration, "plans": args.plans,
             "trainers": args.trainers, "baseline": args.baseline, "folds": args.folds, "repeats": args.repeats,
             "held_out": args.held_out, "mid": args.mid, "equivalence_margin": args.equivalence_margin}
    values.update({key: value for key, value in flags.items() if value is not None})
    given, robustness = _robustness_value(args)
    if given:
        values["robustness"] = robustness  # None: --no-robustness
    return values, executor


def resolve_study(args: argparse.Namespace):
    """The study to run: study.json's, updated by the flags (refused where they contradict it
    unless --reconfigure); a new study needs -d or --preset. The robustness sweep may be added to
    a stored study without --reconfigure (robustness_settings.contradictions)."""
    from pu_nnunet.robustness import settings as robustness_settings
    from pu_nnunet.study.errors import StudyError
    from pu_nnunet.study.spec import (STUDY_FILE, Study, contradictions, default_baseline, load_study, save_study,
                                      study_paths)

    study_dir = Path(args.study_dir)
    values, executor = _study_values(args)
    stored = load_study(study_dir) if (study_dir / STUDY_FILE).is_file() else None
    if stored is not None and not values:
        return stored, executor
    base = stored.identity() if stored is not None else {}
    base["robustness"] = stored.robustness if stored is not None else None
    if stored is not None:
        base.update(mid=stored.mid, equivalence_margin=stored.equivalence_margin)
    if "trainers" in values and "baseline" not in values:
        values["baseline"] = default_baseline(values["trainers"])
    merged = {**base, **values}
    if "dataset_id" not in merged:
        raise StudyError(f"{study_dir / STUDY_FILE} does not exist yet: a new study needs -d DATASET_ID (or --preset)")
    merged.setdefault("baseline", default_baseline(merged.get("trainers") or ["nnUNetTrainerPUReBaseline"]))
    paths = stored.paths if stored is not None else study_paths(study_dir)
    requested = Study(**merged, paths=paths, preset=args.preset or (stored.preset if stored else None))
    if stored is not None:
        problems = contradictions(stored, requested) + robustness_settings.contradictions(stored.robustness,
                                                                                           requested.robustness)
        if problems and not args.reconfigure:
            raise StudyError(f"the flags contradict {study_dir / STUDY_FILE} ({'; '.join(problems)}); run without "
                             "them to resume that study, use another -o, or pass --reconfigure")
    save_study(requested)
    return requested, executor


def make_executor(args: argparse.Namespace, executor_settings: dict):
    from pu_nnunet.study.errors import StudyError
    from pu_nnunet.study.execution.local import LocalExecutor, parse_devices
    from pu_nnunet.study.execution.slurm import DEFAULT_MAX_ATTEMPTS, DEFAULT_SIGNAL_DELAY_S, SlurmExecutor

    settings = dict(executor_settings)
    kind = args.executor or settings.pop("kind", "local")
    settings.pop("kind", None)
    pick = lambda flag, key, default: flag if flag is not None else settings.get(key, default)  # noqa: E731
    max_attempts = pick(args.max_attempts, "max_attempts", DEFAULT_MAX_ATTEMPTS)
    if kind == "local":
        from_file = not args.devices and settings.get("devices") is not None
        devices = parse_devices(settings.get("devices") if from_file else args.devices,
                                f"{args.config}: [executor] devices" if from_file else "--devices")
        return LocalExecutor(devices,
                             cpu_threads=pick(args.cpu_threads, "cpu_threads", None), max_attempts=max_attempts,
                             cpu_jobs=pick(args.cpu_jobs, "cpu_jobs", 1))
    if kind != "slurm":
        raise StudyError(f"executor must be 'local' or 'slurm', got {kind!r}")
    sbatch = dict(settings.get("sbatch", {}))
    for item in args.sbatch:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StudyError(f"--sbatch takes KEY=VALUE, got {item!r}")
        sbatch[key.strip().lstrip("-")] = value
    return SlurmExecutor(partition=pick(args.partition, "partition", None),
                         time_limit_min=pick(args.time_limit, "time_limit", 24 * 60),
                         gpus_per_job=pick(args.gpus_per_job, "gpus_per_job", 1),
                         cpus_per_job=pick(args.cpus_per_job, "cpus_per_job", None), sbatch=sbatch,
                         max_concurrent=pick(args.max_concurrent, "max_concurrent", None),
                         signal_delay_s=pick(args.signal_delay, "signal_delay", DEFAULT_SIGNAL_DELAY_S),
                         max_attempts=max_attempts,
                         backend=args.slurm_backend if args.slurm_backend != "slurm" else settings.get("backend", "slurm"))


def format_status(study) -> str:
    from pu_nnunet.study.errors import StudyError
    from pu_nnunet.study.jobs import (DONE, RUNNING, epoch_reached, finished_metrics, in_study, job_states,
                                      run_in_progress)
    from pu_nnunet.study.report.study_report import short_name
    from pu_nnunet.robustness.study_sweep import sweep_pending, sweep_state
    from pu_nnunet.evaluation.report.markdown import table

    active = run_in_progress(study.study_dir)
    rows, counts = [], {}
    for job, state in job_states(study):
        shown = state["state"]
        if shown == RUNNING and not active and state.get("executor") != "slurm":
            shown = "interrupted"  # no run holds the study: the process that ran it is gone
        if shown == DONE and finished_metrics(study.study_dir, job, state) is None:
            shown = "evaluation missing"  # what the report says too: not a finished run
        elif shown == DONE and sweep_pending(study, job):
            shown = f"done, sweep {sweep_state(state)}"
        log_path = in_study(study.study_dir, state.get("log"))
        counts[shown] = counts.get(shown, 0) + 1
        duration = state.get("duration_s")
        if shown == RUNNING and state.get("started"):
            duration = round(time.time() - state["started"], 1)
        dice = state.get("foreground_dice")
        # the epoch nnU-Net reached: live from the training log while it runs
        epoch = epoch_reached(log_path) if shown == RUNNING else state.get("epoch")
        rows.append((short_name(job.trainer), str(job.fold), str(job.repeat), shown, str(state.get("attempts", 0)),
                     str(state.get("preemptions", 0)), "-" if epoch is None else str(epoch),
                     state.get("submitted_job_id") or "-",
                     "-" if duration is None else f"{duration:.0f} s", "-" if dice is None else f"{dice:.3f}",
                     str(log_path) if log_path else "-"))
    header = ("trainer", "fold", "repeat", "state", "attempts", "preempted", "epoch", "job id", "duration",
              "Dice fg", "log")
    try:
        dataset = study.dataset_folder_name()
    except StudyError:  # status works on a copied study folder without the raw data
        from pu_nnunet.datasets.shared.raw_folder import dataset_id_prefix

        dataset = dataset_id_prefix(study.dataset_id).rstrip("_")
    lines = [f"study {study.study_dir}: {dataset} {study.configuration} {study.plans}; "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "", table(header, rows)]
    failed = [(job, s) for job, s in job_states(study) if s["state"] == "failed" and s.get("error")]
    for job, state in failed:
        lines.append(f"\n{job.name} failed: {state['error'].splitlines()[0] if state['error'] else ''}")
    for job, state in job_states(study):
        sweep = state.get("robustness") or {}
        if sweep.get("state") == "failed" and sweep_pending(study, job):
            lines.append(f"\n{job.name}: robustness sweep failed: {(sweep.get('error') or '-').splitlines()[0]}")
    if counts.get("interrupted"):
        lines.append("\ninterrupted jobs resume (nnUNetv2_train --c) with `pu-nnunet study run -o "
                     f"{study.study_dir}`")
    return "\n".join(lines)


def _sweep(study_dir: Path) -> None:
    """The temporaries that killed runs of this machine left in the study folder and its job states."""
    from pu_nnunet.study.jobs import JOBS_DIR
    from pu_nnunet.user_files import sweep_stale_temporaries

    for folder in (Path(study_dir), Path(study_dir) / JOBS_DIR):
        sweep_stale_temporaries(folder)


def _run(args: argparse.Namespace) -> int:
    from pu_nnunet.study.report.study_report import REPORT_FILE, SUMMARY_HEADER, summary_rows
    from pu_nnunet.study.execution.runner import run_study
    from pu_nnunet.study.execution.steps import Interrupted
    from pu_nnunet.study.spec import STUDY_FILE
    from pu_nnunet.evaluation.report.markdown import table
    from pu_nnunet.user_errors import UserInputError

    configure_logging("pu-nnunet study")
    # the executor first: a bad --devices (or [executor] table) is refused before study.json is written
    executor = make_executor(args, _study_values(args)[1])
    study_dir = Path(args.study_dir)
    before = {p.name for p in study_dir.iterdir()} if study_dir.is_dir() else None
    new_study = not (study_dir / STUDY_FILE).exists()
    study, _ = resolve_study(args)
    _sweep(study.study_dir)
    try:
        outcome = run_study(study, executor, report=not args.no_report)
    except UserInputError:
        if new_study:
            _forget_unstarted_study(study_dir, before)
        raise
    except Interrupted as signal_name:
        print(f"pu-nnunet study: interrupted ({signal_name}); resume with `pu-nnunet study run -o {study.study_dir}`",
              file=sys.stderr)
        return 143
    if outcome.report is not None:
        print("\n" + table(SUMMARY_HEADER, summary_rows(outcome.report)))
        print(f"\nreport: {study.study_dir / REPORT_FILE}")
    if outcome.failed:
        print(f"pu-nnunet study: {len(outcome.failed)} job(s) failed: {', '.join(outcome.failed)}; "
              f"see `pu-nnunet study status {study.study_dir}`; re-running retries them", file=sys.stderr)
        return 1
    return 0


def _forget_unstarted_study(study_dir: Path, before: set[str] | None) -> None:
    """Removes the study.json this run wrote (and the folder, if this run made it) when the study
    was refused before anything else was written (an unknown dataset, missing plans): bad input
    leaves no half-made study behind, and the corrected command starts afresh instead of
    contradicting it. ``before``: the folder's entries before the run, None if it did not exist."""
    from pu_nnunet.study.spec import STUDY_FILE

    if study_dir.is_dir() and {p.name for p in study_dir.iterdir()} - (before or set()) == {STUDY_FILE}:
        (study_dir / STUDY_FILE).unlink()
        if before is None:
            study_dir.rmdir()


def run(args: argparse.Namespace) -> int:
    # bad input raises UserInputError (StudyError): the pu-nnunet dispatcher prints it as one line
    from pu_nnunet.study.spec import check_study, load_study

    if args.study_command == "run":
        return _run(args)
    if args.study_command == "plan":
        from pu_nnunet.study.plan import plan_text

        print(plan_text(args.study_dir, args.sd, args.mid, args.family_size, args.trainers, args.labels))
        return 0
    study = load_study(args.study_dir)
    if args.study_command == "status":
        print(format_status(study))
        return 0
    from pu_nnunet.study.report.study_report import REPORT_FILE, write_study_report

    # --mid / --equivalence-margin change this report only; study.json keeps the stored values
    for name in ("mid", "equivalence_margin"):
        if getattr(args, name) is not None:
            setattr(study, name, getattr(args, name))
    check_study(study)
    _sweep(study.study_dir)
    if write_study_report(study) is None:
        print(f"pu-nnunet study: no finished run in {study.study_dir} yet", file=sys.stderr)
        return 1
    print(f"report: {study.study_dir / REPORT_FILE}")
    return 0
