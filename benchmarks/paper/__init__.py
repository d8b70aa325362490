"""The paper's experiments (Exp.1-3, Table 4) on shipped data, every method in every cell."""
from benchmarks.paper.bench import bench, bench_parallel, resolve
from benchmarks.paper.settings import EXPERIMENTS, FULL, QUICK, Settings

__all__ = ["EXPERIMENTS", "FULL", "QUICK", "Settings", "bench", "bench_parallel", "resolve"]
