"""What reaches the terminal: modelship's own lines, and the libraries' only at ``-vv``, without credentials.

The SDKs log at WARNING for things modelship handles itself (azure-core's "Unable to stream download." on a
broken connection, urllib3's retries and full pools): at the default verbosity only records of the
``modelship`` loggers are shown, and a retry is modelship's own line (at ``-v``). ``-v`` adds azure-identity's
report of why each credential failed (modelship's error line points there); ``-vv`` shows everything.

At ``-vv`` (DEBUG) urllib3 logs every request line with its full query string: with a SAS that is the
signature (``...&sig=...``), and a retry logs the URL again. modelship never logs secrets itself, but these
records are created inside the SDKs, so a filter on their loggers masks them before any handler sees them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

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


def _own(record: logging.LogRecord) -> bool:
    return record.name == "modelship" or record.name.startswith("modelship.")


class OwnRecordsOnly(logging.Filter):
    """Passes the records of modelship's loggers (``modelship`` and below), and of the ``also`` loggers."""

    def __init__(self, also: tuple[str, ...] = ()):
        super().__init__()
        self.also = also

    def filter(self, record: logging.LogRecord) -> bool:
        return _own(record) or any(record.name == n or record.name.startswith(n + ".") for n in self.also)


class _Format(logging.Formatter):
    """``modelship: message``; a library's record also names its logger (seen at -vv only)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if _own(record):
            return f"modelship: {line}"
        return f"modelship: [{record.name}] {line}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (which tests and embedding programs may replace)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(_Format("%(message)s"))
_OWN = OwnRecordsOnly()
_OWN_AND_IDENTITY = OwnRecordsOnly(also=("azure.identity",))  # at -v: why each credential failed


def configure(verbose: int) -> None:
    """The CLI's logging: WARNING, INFO at -v, DEBUG at -vv; libraries' records only at -vv; all redacted.

    Like ``logging.basicConfig``, it leaves a root logger that already has handlers (a host program's, pytest's)
    alone; a second call (the CLI run twice in one process) adjusts the one handler.
    """
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        if root.handlers:
            protect_handlers()
            return
        root.addHandler(_HANDLER)
        logging.captureWarnings(True)  # a library's warnings.warn() is a record of "py.warnings": shown at -vv
    for f in (_OWN, _OWN_AND_IDENTITY):
        _HANDLER.removeFilter(f)
    if verbose < 2:
        _HANDLER.addFilter(_OWN if verbose == 0 else _OWN_AND_IDENTITY)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
    protect_handlers()


@contextlib.contextmanager
def cli_logging(verbose: int) -> Iterator[None]:
    """:func:`configure` for one CLI run, then the root logger as it was: a host that runs ``main()`` in its own
    process (a test, a build script) keeps its levels and handlers."""
    root = logging.getLogger()
    level, had = root.level, _HANDLER in root.handlers
    configure(verbose)
    try:
        yield
    finally:
        root.setLevel(level)
        if not had and _HANDLER in root.handlers:
            root.removeHandler(_HANDLER)
            logging.captureWarnings(False)


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
