"""Evaluation: systems × test manifests → predictions, metrics with CIs, the paper's report."""
