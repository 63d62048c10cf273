"""Running a study's jobs: the runner (``study run`` as a library call), the local and SLURM
executors, the worker each job process runs, its steps (train, predict, evaluate) and the nnU-Net
commands they call. Reads the study model (spec, jobs) one level up; writes job states and runs."""
