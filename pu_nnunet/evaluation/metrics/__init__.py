"""Numbers: per-case confusion counts, Dice/IoU/false-positive-rate aggregates, paired statistics."""
