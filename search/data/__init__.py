"""Data: the packaged datasets and vocabulary (fetched from the package index), tokenizers, baselines."""
