"""Public endpoints: an internet-facing ALB serves HTTPS only, and the model servers behind it require an API key."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from mlplat.policy.framework import (
    ADVISORY,
    STRICTER_IN_PRODUCTION,
    Resource,
    ResourceRule,
    Rule,
    Violation,
    get,
    is_true,
)

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
_ALB = "alb.ingress.kubernetes.io/"
# Opt-outs recorded by mlplat.components.model_service (PUBLIC_WITHOUT_TLS, PUBLIC_WITHOUT_AUTH).
_PUBLIC_WITHOUT_TLS = "mlplat.io/public-without-tls"
_PUBLIC_WITHOUT_AUTH = "mlplat.io/public-without-auth"
_BASIC_AUTH_BEHIND = "mlplat.io/basic-auth"  # mlplat.components.tracking.BASIC_AUTH_BEHIND


def _alb_listeners(annotations: Mapping[str, Any]) -> list[tuple[str, int]] | None:
    """(protocol, port) of each ALB listener; the controller's default without ``listen-ports``: HTTPS 443 with a
    certificate, else HTTP 80 (aws-load-balancer-controller v2.13 annotations). None: not known offline."""
    raw = annotations.get(f"{_ALB}listen-ports")
    if raw is None:
        return [("HTTPS", 443)] if annotations.get(f"{_ALB}certificate-arn") else [("HTTP", 80)]
    try:
        entries = json.loads(str(raw))
        return [(str(proto).upper(), int(port)) for entry in entries for proto, port in entry.items()]
    except (ValueError, TypeError, AttributeError):
        return None


def public_endpoint_protected(res: Resource) -> Iterator[Violation]:
    """An internet-facing ALB serves HTTPS only (or redirects HTTP to it), and the model servers behind it require
    an API key; ModelService's explicit opt-outs (``allow_public_without_tls``/``_auth``) are flagged here."""
    annotations = get(res.inputs, "metadata", "annotations")
    if not isinstance(annotations, Mapping) or annotations.get(f"{_ALB}scheme") != "internet-facing":
        return
    listeners = _alb_listeners(annotations)
    plain = sorted(port for proto, port in listeners or () if proto == "HTTP")
    if plain and not annotations.get(f"{_ALB}ssl-redirect"):
        waived = " (allow_public_without_tls)" if is_true(annotations.get(_PUBLIC_WITHOUT_TLS)) else ""
        yield Violation(
            f"internet-facing ALB serves plain HTTP on port {', '.join(map(str, plain))}{waived}: "
            "API keys and payloads cross the internet in clear text",
            "give it an ACM certificate (ModelServiceArgs.certificate_arn, "
            "mlplat:services.<name>.certificateArn): HTTPS 443 only",
        )
    if is_true(annotations.get(_PUBLIC_WITHOUT_AUTH)):
        yield Violation(
            "internet-facing ALB in front of model servers that take requests without an API key "
            "(allow_public_without_auth)",
            "require a key: ModelServiceArgs.generate_api_key=True or api_key_secret",
        )


def tracking_ingress_tls(res: Resource) -> Iterator[Violation]:
    """An ALB in front of MLflow's basic-auth (even an internal one) serves HTTPS only: the users' passwords travel
    in every request's Authorization header."""
    annotations = get(res.inputs, "metadata", "annotations")
    if not isinstance(annotations, Mapping) or not is_true(annotations.get(_BASIC_AUTH_BEHIND)):
        return
    plain = sorted(port for proto, port in _alb_listeners(annotations) or () if proto == "HTTP")
    if plain:
        yield Violation(
            f"the ALB in front of MLflow's basic-auth serves plain HTTP on port "
            f"{', '.join(map(str, plain))}: the trainer's, the pipeline's and the users' passwords "
            "cross the VPC in clear text in every request",
            "give it an ACM certificate: TrackingArgs.ingress_certificate_arn, "
            "mlplat:tracking.ingressCertificateArn (HTTPS 443 only)",
        )


RULES: tuple[Rule, ...] = (
    ResourceRule(
        "public-endpoint-protected",
        "internet-facing ALBs serve HTTPS only and model servers behind "
        "them require an API key (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        frozenset({INGRESS}),
        public_endpoint_protected,
    ),
    ResourceRule(
        "tracking-ingress-tls",
        "the ALB in front of MLflow's basic-auth serves HTTPS only (advisory)",
        ADVISORY,
        frozenset({INGRESS}),
        tracking_ingress_tls,
    ),
)
"""The public-endpoint rules."""
