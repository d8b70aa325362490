"""Generated code for protobuf package ``transplant.v1`` (do not edit *_pb2*)."""
