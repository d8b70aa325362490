"""Ways to learn an adapter, selected by name (each one file that registers itself)."""
from transplant.methods import (back_distill, direct_learn, distill, hybrid, identity,  # noqa: F401 (register)
                                jacobian, lstsq_stitch, probe_distill, probe_stitch, weight_match)
from transplant.methods.base import (AUTO, METHODS, DistillSettings, Method, Samples, TrainConfig, TransplantProblem,
                                     auto_candidates,
                                     get_method, register)

__all__ = ["AUTO", "METHODS", "auto_candidates", "DistillSettings", "Method", "Samples", "TrainConfig", "TransplantProblem", "get_method",
           "register"]
