"""Snapshot stores (S3, a local directory) and the workspace archive format they hold."""
