"""Time-to-feedback benchmarks: each figure printed next to the floor it is measured against (BENCHMARKS.md)."""
