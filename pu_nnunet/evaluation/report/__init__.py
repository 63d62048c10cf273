"""What people read: metrics.json, per_case.csv, report.md and plots of evaluate and compare."""
