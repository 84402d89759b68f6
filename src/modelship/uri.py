"""Model URIs: parse, classify by scheme, and strip credentials before anything is logged or stored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import UsageError

# Query parameters of a SAS and other signed URLs; their values are secrets.
_SECRET_QUERY_KEYS = {"sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "token"}
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)([?&]sig=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(aws_secret_access_key\s*[=:]\s*)\S+"), r"\1***"),
    (re.compile(r"(?i)((?:password|passwd|secret)\s*[=:]\s*)[^\s;,'\"]+"), r"\1***"),
    (re.compile(r"(//[^/@:\s]+:)[^/@\s]+@"), r"\1***@"),
]


def redact(text: str) -> str:
    """Mask anything that looks like a credential (SAS signature, account key, URL password)."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


@dataclass(frozen=True)
class ModelURI:
    """A parsed model location. ``raw`` may hold a SAS; ``display`` never does."""

    scheme: str  # "az", "s3", "file", "https"/"http"
    location: str  # account (az), bucket (s3), host (http), "" (file)
    container: str  # blob container (az); "" otherwise
    prefix: str  # path inside the container/bucket/dir, no leading or trailing "/"
    raw: str
    query: str = ""  # the URL's query string (may carry a SAS)
    endpoint: str = ""  # explicit service endpoint from an https URL

    @property
    def display(self) -> str:
        return strip_secrets(self.raw)

    def child(self, *parts: str) -> str:
        """The display URI of a path below this one."""
        base = self.display.split("?", 1)[0].rstrip("/")
        return "/".join([base, *(p.strip("/") for p in parts if p)])


def strip_secrets(uri: str) -> str:
    """The URI as it may appear in logs, manifests and labels: no userinfo password, no signed query."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}" if userinfo else host
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in _SECRET_QUERY_KEYS]
    if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        query = []  # a SAS is only meaningful whole; keep none of it
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def _clean_prefix(path: str, uri: str) -> str:
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", "..") or "\\" in p or any(ord(c) < 32 for c in p):
            raise UsageError(f"invalid model URI {strip_secrets(uri)!r}: path segment {p!r} is not allowed")
    return "/".join(parts)


_SCHEME_TYPO = re.compile(r"(az|s3|https?):/{0,2}(.*)", re.IGNORECASE | re.DOTALL)  # file:/path is a valid file URI
_AZ_ACCOUNT = re.compile(r"[a-z0-9]{3,24}", re.IGNORECASE)
_AZ_CONTAINER = re.compile(r"\$root|\$web|\$logs|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def parse(uri: str) -> ModelURI:
    """Parse ``az://``, ``https://ACCOUNT.blob.core.windows.net/...``, ``s3://``, ``file://``, paths and URLs."""
    if not uri or not uri.strip():
        raise UsageError(
            "empty model URI: give az://ACCOUNT/CONTAINER/PREFIX, s3://BUCKET/PREFIX, a folder or an https URL"
        )
    uri = uri.strip()
    # urlsplit silently drops tabs and newlines; a NUL would reach the file system or a host name. Refuse them all.
    bad = next((i for i, c in enumerate(uri) if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise UsageError(f"invalid model URI: control character {uri[bad]!r} at position {bad}")
    if "://" not in uri:
        typo = _SCHEME_TYPO.match(uri)
        if typo:  # az:/x, s3:bucket/x: a scheme without its '//', which would be taken for a local folder
            scheme, rest = typo.group(1).lower(), typo.group(2).lstrip("/")
            raise UsageError(
                f"invalid model URI {strip_secrets(uri)!r}: did you mean {scheme}://{rest}? "
                "(a store URI has '://'; a local folder is given as a plain path)"
            )
        return ModelURI("file", "", "", str(Path(uri).expanduser().resolve()), uri)
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        raise UsageError(f"invalid model URI {redact(uri.split('?', 1)[0])!r}: {e}") from None
    scheme = parts.scheme.lower()
    hint = "expected az://ACCOUNT/CONTAINER/PREFIX"
    if scheme == "az":
        segs = [s for s in parts.path.split("/") if s]
        if not parts.netloc or not segs:
            raise UsageError(f"invalid model URI {strip_secrets(uri)!r}: {hint}")
        if not _AZ_ACCOUNT.fullmatch(parts.netloc):
            raise UsageError(
                f"invalid model URI {strip_secrets(uri)!r}: {parts.netloc!r} is not a storage account name "
                "(3-24 letters and digits)"
            )
        if not _AZ_CONTAINER.fullmatch(segs[0]):
            raise UsageError(
                f"invalid model URI {strip_secrets(uri)!r}: {segs[0]!r} is not a container name "
                "(3-63 lowercase letters, digits and single hyphens)"
            )
        return ModelURI("az", parts.netloc, segs[0], _clean_prefix("/".join(segs[1:]), uri), uri, parts.query)
    if scheme in ("https", "http") and parts.hostname and parts.hostname.endswith(".blob.core.windows.net"):
        segs = [s for s in parts.path.split("/") if s]
        if not segs:
            raise UsageError(f"invalid model URI {strip_secrets(uri)!r}: no container in the URL")
        account = parts.hostname.split(".", 1)[0]
        endpoint = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
        return ModelURI("az", account, segs[0], _clean_prefix("/".join(segs[1:]), uri), uri, parts.query, endpoint)
    if scheme == "s3":
        if not parts.netloc:
            raise UsageError(f"invalid model URI {strip_secrets(uri)!r}: expected s3://BUCKET/PREFIX")
        return ModelURI("s3", parts.netloc, "", _clean_prefix(parts.path, uri), uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"invalid model URI {uri!r}: file URIs take no host (file:///path)")
        return ModelURI("file", "", "", str(Path(parts.path).resolve()), uri)
    if scheme in ("https", "http"):
        if not parts.hostname or not parts.path.strip("/"):
            raise UsageError(f"invalid model URI {strip_secrets(uri)!r}: an https URL must name a file")
        return ModelURI(scheme, parts.netloc, "", parts.path.strip("/"), uri, parts.query)
    # Any other scheme may belong to a plugin source; the registry decides whether it is known.
    return ModelURI(scheme, parts.netloc, "", parts.path.strip("/"), uri, parts.query)
