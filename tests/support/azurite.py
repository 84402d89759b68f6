"""Azurite credentials for tests: a container SAS with chosen permissions, as a connection string."""

from __future__ import annotations

import datetime as dt


def container_sas(testbed: dict[str, str], container: str, permission: str) -> str:
    """A connection string whose only credential is a SAS for ``container`` with ``permission`` (e.g. "r", "cw")."""
    from azure.storage.blob import generate_container_sas

    key = testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"].split("AccountKey=")[1].split(";")[0]
    sas = generate_container_sas(
        "devstoreaccount1",
        container,
        account_key=key,
        permission=permission,
        expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
    )
    port = testbed["MODELSHIP_TESTBED_AZURITE_PORT"]
    return f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;SharedAccessSignature={sas}"
