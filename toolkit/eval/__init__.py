"""Judging a trained student: task metrics, the run's evaluation (metrics.json),
plots and the Markdown tables printed after a run."""
