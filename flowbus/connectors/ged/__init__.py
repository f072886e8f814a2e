"""GED deposit: a document's files and metadata into a directory, a WebDAV server or an S3 bucket."""

from flowbus.connectors.ged.base import GedTarget, safe_name, safe_path
from flowbus.connectors.ged.steps import FilesystemGed, GedConnector, S3Ged, WebdavGed

__all__ = ["FilesystemGed", "GedConnector", "GedTarget", "S3Ged", "WebdavGed", "safe_name", "safe_path"]
