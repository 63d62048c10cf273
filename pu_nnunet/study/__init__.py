"""Studies: several trainers over folds and repeats, trained and evaluated through nnU-Net's
own commands, on one machine, several GPUs or a SLURM cluster, with a paired-statistics report.

``pu-nnunet study run|status|report``; the demo is the study preset ``demo``.
"""
