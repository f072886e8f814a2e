"""Blob storage seam: content-addressed files on a filesystem or S3."""

from flowbus.blobs.base import BlobStore

__all__ = ["BlobStore"]
