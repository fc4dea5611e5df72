"""Who is calling: the IAM principal API Gateway verified (IAM authorization), mapped to the mesh's principal
form, so that the mesh's authorization policy and the fields' detokenize policies apply unchanged.

    arn:aws:iam::123456789012:role/path/Name            -> spiffe://{trust domain}/ns/aws-123456789012/sa/Name
    arn:aws:sts::123456789012:assumed-role/Name/session -> the same (the session name is not the identity)
    arn:aws:iam::123456789012:user/path/Name            -> spiffe://{trust domain}/ns/aws-123456789012/user/Name

Anything else (no IAM authorizer, a federated or root caller, a malformed ARN) maps to nobody: refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ARN = re.compile(r"^arn:aws[a-z-]*:(?P<svc>iam|sts)::(?P<account>\d{12}):(?P<kind>role|assumed-role|user)/"
                  r"(?P<rest>[\w+=,.@/-]{1,512})$")
_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


def principal_of_arn(arn: str, trust_domain: str) -> str | None:
    match = _ARN.match(arn)
    if match is None:
        return None
    kind, rest = match["kind"], match["rest"].split("/")
    if kind == "assumed-role":
        if match["svc"] != "sts" or len(rest) != 2:
            return None
        name, section = rest[0], "sa"
    else:
        if match["svc"] != "iam":
            return None
        name, section = rest[-1], "sa" if kind == "role" else "user"
    if not _NAME.match(name):
        return None
    return f"spiffe://{trust_domain}/ns/aws-{match['account']}/{section}/{name}"


def http_principal(event: Mapping[str, Any], trust_domain: str) -> str | None:
    """The caller of an API Gateway HTTP API (payload 2.0) request with IAM authorization, or None."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    iam = authorizer.get("iam") if isinstance(authorizer, Mapping) else None
    arn = iam.get("userArn") if isinstance(iam, Mapping) else None
    return principal_of_arn(arn, trust_domain) if isinstance(arn, str) else None
