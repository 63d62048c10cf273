"""A study's report from its finished runs: ``report.md``, ``summary.json``, ``plots/`` and
``comparisons/`` (study_report), with its sections: run-level statistics (run_level, run_pooling),
Dice protocols (protocol_section), operating points and convergence. Reads the study model and the
runs' evaluations; runs nothing."""
