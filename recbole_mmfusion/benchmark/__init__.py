"""Side-by-side benchmark of several models: runs, per-user metrics, paired tests and the report."""
