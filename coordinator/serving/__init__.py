"""Serving the transplant net: the Predict gRPC service for end users.

    python -m coordinator.serving serve --store URL      # a serving replica (any number on one store)
    python -m coordinator.serving predict --server HOST:PORT --category C --task T PATH...

A replica loads the latest promoted version of a net from the object store (`loader`), polls for newer
ones and swaps them in with one assignment, so a request in flight finishes on the version it started
with (`NetHolder`). Images arrive encoded and are checked against byte and pixel limits before any
pixel is decoded (`images`); concurrent requests to one route are run as one batch (`batcher`).
Scale-out is replicas of this process behind one Kubernetes Service (deploy/k8s/predict.yaml): the
replicas share nothing but the store, which each reads on its own.
"""
