"""The paper's experiments (Exp.1-3, Table 4) on shipped data, every method in every cell."""
from transplant.experiments.bench import bench, bench_parallel, resolve
from transplant.experiments.settings import EXPERIMENTS, FULL, QUICK, Settings

__all__ = ["EXPERIMENTS", "FULL", "QUICK", "Settings", "bench", "bench_parallel", "resolve"]
