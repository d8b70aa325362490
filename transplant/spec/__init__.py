"""Declarative module specs: schema and validation, shape inference, building torch modules."""
from transplant.spec.build import (SpecModule, WeightsError, build_module, check_weights, load_module,
                                   save_module, weights_from_bytes, weights_to_bytes)
from transplant.spec.schema import (DEFAULT_MAX_PARAMS, INPUT, LAYER_TYPES, SPEC_FORMAT, ModuleSpec, Node,
                                    SpecError, parse_spec)
from transplant.spec.shapes import infer_shapes, output_shape, parameter_count, parameter_shapes

__all__ = [
    "DEFAULT_MAX_PARAMS", "INPUT", "LAYER_TYPES", "SPEC_FORMAT", "ModuleSpec", "Node", "SpecError",
    "SpecModule", "WeightsError", "build_module", "check_weights", "infer_shapes", "load_module",
    "output_shape", "parameter_count", "parameter_shapes", "parse_spec", "save_module",
    "weights_from_bytes", "weights_to_bytes",
]
