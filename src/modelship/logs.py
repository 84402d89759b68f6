"""Keep credentials out of log output, including the debug logs of the HTTP libraries modelship drives.

At ``-vv`` (DEBUG) urllib3 logs every request line with its full query string: with a SAS that is the
signature (``...&sig=...``), and a retry logs the URL again. modelship never logs secrets itself, but these
records are created inside the SDKs, so a filter on their loggers masks them before any handler sees them.
"""

from __future__ import annotations

import logging

from .uri import redact

# Loggers whose records carry request URLs (a filter on a logger applies to records created on it)
LIBRARY_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")


class RedactFilter(logging.Filter):
    """Masks SAS signatures, account keys, URL passwords and the like in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem to report, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactFilter()


def protect_library_loggers() -> None:
    """Attach the filter to the SDK loggers that print request URLs (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def protect_handlers(logger: logging.Logger | None = None) -> None:
    """Attach the filter to the handlers of ``logger`` (default: root), so records from any library that
    propagate to them are masked too, not only those of the known loggers (idempotent)."""
    for handler in (logger or logging.getLogger()).handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def quiet_azure_identity() -> None:
    """Keep DefaultAzureCredential's failure report out of normal output (``-v`` shows it again).

    On failure it logs a multi-line WARNING listing every credential it tried, once per attempt; modelship
    reports the failure as one line instead (the blob store, the ACR token exchange). A level the user set on
    the logger is left alone.
    """
    logger = logging.getLogger("azure.identity")
    if logger.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        logger.setLevel(logging.ERROR)
