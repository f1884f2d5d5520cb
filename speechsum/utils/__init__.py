"""Helpers that import nothing of speechsum: files, text analysis, OpenAI-API client utilities."""
