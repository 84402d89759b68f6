"""gunicorn settings for the container: sized by environment, logs to stdout, nothing written outside /tmp.

Override at run time without rebuilding: PORT, WEB_CONCURRENCY (workers), GUNICORN_THREADS, GUNICORN_TIMEOUT.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# 2 workers x 4 threads fits a container limited to ~1 CPU: inference is short and releases the GIL in
# onnxruntime, threads cover I/O waits, and a second worker keeps serving while one is recycled.
# Scale out with replicas rather than with workers per pod.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# Each worker loads its own model (no preload): onnxruntime sessions are not fork-safe.
preload_app = False

timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Kubernetes sends SIGTERM and waits terminationGracePeriodSeconds (30 s): finish in-flight requests first.
graceful_timeout = 20
# Longer than typical load balancer health-check intervals; idle connections are cheap with gthread.
keepalive = 5

# The root filesystem is read-only in Kubernetes; /tmp is an emptyDir (heartbeat files live there).
worker_tmp_dir = "/tmp"
# gunicorn >= 25 opens a control socket under $HOME by default; the app user has no writable home.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# Only the safe, useful fields: no query strings or headers (could carry tokens).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
