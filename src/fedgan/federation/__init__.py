"""Federated training on Flower: one ServerApp, one ClientApp per hospital, FedAvg over G and D."""
