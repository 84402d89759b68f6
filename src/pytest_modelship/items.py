"""What the plugin's test items share: each is marked ``modelship`` (``-m modelship`` selects only them, in a repo
with other tests), holds the session's run and what it runs, and reports its own failure (an ``ItemFailed``) as
its text alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pytest

if TYPE_CHECKING:
    from ._protocol import Run


class ItemFailed(Exception):
    """An item's failure: its text is the whole report."""


class ModelshipItem(pytest.Item):
    """The base of the smoke case, image check and compare items."""

    given: ClassVar[str]  # the keyword ``from_parent`` passes beside ``run`` (case, check, spec), kept by that name
    shown: ClassVar[str]  # the item in the report, with {name} its name
    run: Run

    def __init__(self, *, run: Run, **kwargs: Any) -> None:
        subject = kwargs.pop(self.given)
        super().__init__(**kwargs)
        self.run = run
        setattr(self, self.given, subject)
        self.add_marker("modelship")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ItemFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.shown.format(name=self.name)


class RunCollector:
    """A collector (mixed in before ``pytest.Collector`` or ``pytest.File``) that gives its items the run."""

    def __init__(self, *, run: Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
