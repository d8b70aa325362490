"""What both sides of the wire share (as Flower's `flwr/common`): sites and the coordinator depend on
this package and never on each other.

    patterns         names, sha256 digests, module roles, chunk sizes, addresses
    errors           what the shared clients raise
    bearer           tokens on the wire: reading a token file, attaching and parsing metadata
    security         transport security: TLS / mutual TLS channel and server credentials
    guard            server-side plumbing both servers use: the caller of an RPC, one expected token
    registry_client  the one ModuleRegistry client (upload, list, delete, checked downloads)
    samples          the samples file format (a site's opt-in few-shot set)

It stays light: grpc, the generated protos and the standard library (samples: torch + safetensors).
"""
