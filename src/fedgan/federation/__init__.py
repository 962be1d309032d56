"""Federated training on Flower: one ServerApp, one ClientApp per hospital; weight averaging or mdgan.

See docs/federation.md."""
