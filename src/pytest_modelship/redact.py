"""Secret-name masking: which ``--modelship-env`` keys hold secrets, and their values shown as ``***``."""

from __future__ import annotations

import re

MASK = "***"

_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PWD|SAS|SIG|CONNECTION_?STRING|CREDENTIAL|AUTH|COOKIE", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """True for keys whose values must never be shown (API_KEY, DB_PASSWORD, AZURE_..._SAS, ...)."""
    return bool(_SECRET_NAME.search(name))


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the (non-empty) values of secret-named keys replaced by ``***``."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}
