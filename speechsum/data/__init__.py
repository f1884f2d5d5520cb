"""Manifests, audio loading, duration-bucketed batching and the shared LightningDataModule."""
