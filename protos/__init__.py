"""Wire protocol of the transplant system: .proto sources and generated code.

Sources live in protos/nt/v1/*.proto (package ``transplant.v1``); regenerate the
committed Python modules with ``python -m protos.build``.
"""
