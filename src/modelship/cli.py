"""The `modelship` command: parse (``_cli_parser``), run the verb (``_cli_verbs``), map errors to exit codes."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from . import logs, progress, settings
from ._cli_output import one_line
from ._cli_parser import build_parser
from ._workers import keep_interrupts
from .errors import ModelshipError
from .uri import redact


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs like on Ctrl-C."""


def _left_behind(e: BaseException) -> str:
    """What an interrupted command left, as the API noted it on the interrupt (a publish's incomplete version)."""
    notes = [n for n in getattr(e, "__notes__", ()) if isinstance(n, str)]
    return "; ".join(notes) or "nothing half-written was left behind"


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # a usage error (2), --help or --version (0): already printed
            return e.code if isinstance(e.code, int) else 2
        verbose = getattr(args, "verbose", 0)
        with logs.cli_logging(verbose):
            return _run(args, verbose)
    except KeyboardInterrupt:  # Ctrl-C while parsing or setting up logging: nothing was started yet
        print("modelship: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, verbose: int) -> int:
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        progress.set_enabled(False)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        settings.current()  # a malformed MODELSHIP_* variable is refused (exit 2) before anything starts
        with keep_interrupts((KeyboardInterrupt, Terminated)):
            args.func(args)
    except ModelshipError as e:
        if verbose >= 2:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"modelship: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"modelship: interrupted; {_left_behind(e)}", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"modelship: terminated; {_left_behind(e)}", file=sys.stderr)
        return 143
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no secrets
        if verbose:
            print(redact(traceback.format_exc()), file=sys.stderr)
        print(
            f"modelship: error: unexpected {e.__class__.__name__}: {one_line(str(e))} (run with -v for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
