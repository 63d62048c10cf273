"""Studies: several trainers over folds and repeats, trained and evaluated through nnU-Net's
own commands, on one machine, several GPUs or a SLURM cluster, with a paired-statistics report.

``pu-nnunet study run|status|report``; the demo is the study preset ``demo``. Programs use the
public API, :mod:`pu_nnunet.study.api`. Inside:

- the study model, here: what a study is and its study.json (spec), its jobs and their states
  (jobs), presets, CPU plans, power planning (plan), errors and the progress logger (logs);
- ``execution/``: the runner, the local and SLURM executors, the worker of one job process, the
  job's steps and the nnU-Net commands they call;
- ``report/``: report.md and summary.json from the finished runs, and their sections;
- the robustness sweep of ``study run --robustness``, its settings and its report section
  (robustness_*).
"""
