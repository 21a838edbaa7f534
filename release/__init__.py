"""Cluster operations: training Jobs, Helm deploys, Argo/native rollouts, the release loop, retraining."""
