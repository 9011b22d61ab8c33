"""Remove credentials from URIs and from text that may quote them, before they reach a log, a metric or a response.

Model and tracking URIs may carry secrets: ``https://user:password@mlflow.example``,
``postgresql://mlflow:password@db/mlflow`` (a tracking URI), or a presigned S3 URL (``X-Amz-Signature=...``).
Error messages from MLflow, boto3 and requests quote them as given.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ -> scheme://***@ (the whole userinfo: a lone "user" part may be a token, as in https://<token>@host)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s'\"<>]+)@")
# ?password=..., &X-Amz-Signature=..., ;token=... -> the value masked
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;][^=&;\s'\"<>]*(?:pass|pwd|token|secret|signature|credential|key|auth)[^=&;\s'\"<>]*=)"
    r"[^&;\s'\"<>#]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it and the values of secret-looking query parameters masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}{MASK}", text)
