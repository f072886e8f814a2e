"""Every Prometheus metric, defined once."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter("flowbus_http_requests_total", "HTTP requests", ["method", "route", "status"])
DOCUMENTS_CREATED = Counter("flowbus_documents_created_total", "Documents created", ["flow"])
STEP_RUNS = Counter("flowbus_step_runs_total", "Step runs", ["flow", "step", "outcome"])
STEP_DURATION = Histogram("flowbus_step_duration_seconds", "Duration of one step run", ["flow", "step"])
BYTES_UPLOADED = Counter("flowbus_bytes_uploaded_total", "Bytes of files uploaded")
