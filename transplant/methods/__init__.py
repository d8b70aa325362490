"""Ways to learn an adapter, selected by name: back_distill, direct_learn, distill, jacobian, lstsq."""
from transplant.methods import back_distill, direct_learn, distill, jacobian, lstsq_stitch  # noqa: F401 (register)
from transplant.methods.base import (METHODS, DistillSettings, Method, Samples, TrainConfig, TransplantProblem,
                                     get_method, register)

__all__ = ["METHODS", "DistillSettings", "Method", "Samples", "TrainConfig", "TransplantProblem", "get_method",
           "register"]
