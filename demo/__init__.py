"""`make demo`: the whole system on one machine, every part a separate process talking gRPC on loopback.

A coordinator (local object store, local Ray) and site agents, each training a teacher on its own
partition of the data (digits sites: classification; shapes sites: classification + segmentation),
splitting it and pushing only its modules. One site per data set owns the generic task modules; the
coordinator transplants every other site's category into them by back-distillation on Ray, asks each
site to evaluate its adapter on its own held-out data, and grows the transplant net.

The demo stands outside both sides: it starts them as processes, talks to them only over gRPC and
uses the coordinator's library (netfetch, report) for what the admin CLI would do.

    python -m demo --help
"""
