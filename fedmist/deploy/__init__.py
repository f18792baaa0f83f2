"""Real deployment over gRPC: certificates, SuperLink / SuperNode processes, run submission."""
