"""Checks of values that Kubernetes or AWS would refuse, run when a component's args are built.

One definition per rule, used by the components and by the stack config (``mlplat.infra.config_workloads``):

* Names: a component's name becomes Kubernetes object names, label values and annotation keys; it must fit
  the strictest of them (:func:`check_name`). Rules from Kubernetes' apimachinery
  (``k8s.io/apimachinery/pkg/util/validation``): a DNS-1035 label (Service names, Ingress backends) is
  ``[a-z]([-a-z0-9]*[a-z0-9])?``, a DNS-1123 label (pod hostnames, Job names used as labels)
  ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, both at most 63 characters; a label value and the name part of an
  annotation key have at most 63 characters. A CronJob's name has at most 52 (the controller appends 11 to
  name its Jobs: kubernetes.io/docs/concepts/workloads/controllers/cron-jobs); an Indexed Job's
  ``<name>-<completions - 1>`` must be a DNS-1123 label (``pkg/apis/batch/validation``, ValidateJob).
* Quantities: CPU and memory are parsed by :func:`mlplat.components.capacity.parse_quantity` (the
  Kubernetes quantity grammar); memory must be whole bytes (``500m`` of memory is half a byte).
* Cron schedules (:func:`check_schedule`): what the API server accepts, ``cron.ParseStandard`` of
  robfig/cron v3.0.1 (``parser.go``, ``spec.go``), which ``pkg/apis/batch/validation`` calls, and no
  ``TZ=``/``CRON_TZ=`` (the CronJob's ``timeZone`` field is the way); plus two mistakes it lets through:
  a step longer than the field's range (``*/61`` runs once an hour) and a day that no month has (``30 2``).
* Model URIs (:func:`check_model_uri`) and ACM certificate ARNs (:func:`check_certificate_arn`).

Every check raises :class:`InvalidValue`, whose message reads ``'<value>' is not ...; <what is allowed>`` (the
stack config's wording); components re-raise it as ``<Args>.<field>=<value>: not ...`` (:meth:`InvalidValue.of`).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

LABEL_MAX = 63
"""DNS labels, label values and the name part of a qualified name (annotation or label key)."""
CRONJOB_NAME_MAX = LABEL_MAX - 11
"""The CronJob controller names each Job ``<cronjob>-<scheduled time in minutes>``: 11 more characters."""

DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_RULE = "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
_DNS1123_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit"


class InvalidValue(ValueError):
    """A value Kubernetes or AWS would refuse: ``'<value>' is <problem>``, the problem starting with "not"."""

    def __init__(self, value: Any, problem: str) -> None:
        self.value = value
        self.problem = problem
        super().__init__(f"{value!r} is {problem}")

    def of(self, field: str) -> ValueError:
        """The same problem, named after the field it came from: ``<field>=<value>: <problem>``."""
        return ValueError(f"{field}={self.value!r}: {self.problem}")


# --- names --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedName:
    """A name built from a component's name: ``prefix + name + suffix``, at most ``limit`` characters.

    ``what`` says where it ends up, e.g. ``"Service"`` or ``"annotation key"``.
    """

    what: str
    suffix: str = ""
    prefix: str = ""
    limit: int = LABEL_MAX

    def budget(self) -> int:
        """The longest component name that fits."""
        return self.limit - len(self.prefix) - len(self.suffix)

    def of(self, name: str) -> str:
        return f"{self.prefix}{name}{self.suffix}"


def _suggest(name: str, budget: int, pattern: re.Pattern[str]) -> str:
    """The name lowercased, other characters as '-', cut to length; '' when that is still no label."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:budget].strip("-")
    return text if pattern.fullmatch(text) else ""


def check_name(component: str, name: str, derived: Sequence[DerivedName], *, dns1035: bool, why: str) -> None:
    """Refuse a component ``name`` that is not a DNS label or too long for one of the ``derived`` names.

    ``dns1035``: the name must be a DNS-1035 label (else a DNS-1123 label), because ``why`` (e.g. "Service
    names are"). The error names the name, the rule, the most characters it may have and the derived name
    that sets that limit, with a suggestion: ``ModelService name='Scorer_V2': not a DNS-1035 label ...``.
    """
    binding = min(derived, key=DerivedName.budget)
    budget = binding.budget()
    pattern, label, rule = (
        (DNS1035_LABEL, "DNS-1035", _DNS1035_RULE) if dns1035 else (DNS1123_LABEL, "DNS-1123", _DNS1123_RULE)
    )
    if pattern.fullmatch(name) and len(name) <= budget:
        return
    problem = f"not a {label} label ({why})" if not pattern.fullmatch(name) else f"too long ({len(name)} characters)"
    suggestion = _suggest(name, budget, pattern)
    hint = f"; e.g. {suggestion!r}" if suggestion and suggestion != name else ""
    raise ValueError(
        f"{component} name={name!r}: {problem}; use {rule}, at most {budget} characters: it names Kubernetes "
        f"objects, and the strictest, {binding.what} {binding.of(name)!r}, may have at most {binding.limit}{hint}"
    )


# --- quantities ---------------------------------------------------------------------------------------------

_CPU_ALLOWED = "use cores (e.g. 2 or 0.5) or millicores (e.g. 500m), more than 0"
_MEMORY_ALLOWED = (
    "use bytes with a binary suffix (Ki, Mi, Gi, Ti) or a decimal one (k, M, G, T), more than 0, e.g. 512Mi or 4Gi"
)


def _quantity(text: Any) -> tuple[Decimal, str] | None:
    """(value in base units, suffix) of a Kubernetes quantity, or None when it is not one."""
    # capacity imports pods, and pods imports this module: import the parser when it is first needed.
    from mlplat.components.capacity import _QUANTITY, parse_quantity

    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    return parse_quantity(text), match["suffix"] or ""


def check_cpu(value: Any) -> str:
    """A CPU quantity: cores or millicores (``2``, ``0.5``, ``500m``), more than zero."""
    parsed = _quantity(value)
    if parsed is None or parsed[1] not in ("", "m"):
        raise InvalidValue(value, f"not a Kubernetes CPU quantity; {_CPU_ALLOWED}")
    if parsed[0] <= 0:
        raise InvalidValue(value, f"not a CPU request (it is zero); {_CPU_ALLOWED}")
    return str(value)


def check_memory(value: Any) -> str:
    """A memory quantity in whole bytes (``512Mi``, ``4Gi``, ``2G``), more than zero."""
    parsed = _quantity(value)
    if parsed is None:
        raise InvalidValue(value, f"not a Kubernetes memory quantity; {_MEMORY_ALLOWED}")
    amount, suffix = parsed
    if suffix == "m":
        raise InvalidValue(
            value,
            f"not a Kubernetes memory quantity: 'm' means a thousandth, of a byte here, "
            f"not mega (M) or mebi (Mi); {_MEMORY_ALLOWED}",
        )
    if amount != amount.to_integral_value():
        raise InvalidValue(
            value, f"not a Kubernetes memory quantity: it is not a whole number of bytes; {_MEMORY_ALLOWED}"
        )
    if amount <= 0:
        raise InvalidValue(value, f"not a memory request (it is zero); {_MEMORY_ALLOWED}")
    return str(value)


def check_gpus(value: Any) -> int:
    """A whole number of GPUs, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(value, "not a GPU count; use a whole number, 0 or more")
    return value


# --- model URIs and certificates ----------------------------------------------------------------------------

MODEL_URI = re.compile(r"(models:/[\w.-]+(@[\w-]+|/\d+)|runs:/\w+/.+|s3://[^/\s]+/?.*)")
"""What a model service on the cluster can load: a registered version or alias, a run's artifact, or S3."""
_MODEL_URI_ALLOWED = (
    "use models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or s3://<bucket>/<path>"
)


def check_model_uri(value: Any) -> str:
    """A model URI the server can load in the cluster (no local paths: the pod has none)."""
    if not isinstance(value, str) or not MODEL_URI.fullmatch(value):
        raise InvalidValue(value, f"not a model URI; {_MODEL_URI_ALLOWED}")
    return value


ACM_CERTIFICATE_ARN = re.compile(
    r"arn:aws(-[a-z]+)*:acm:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:certificate/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


def check_certificate_arn(value: Any) -> Any:
    """An ACM certificate ARN (a value known only at deploy time, a Pulumi Output, is left to AWS)."""
    if isinstance(value, str) and not ACM_CERTIFICATE_ARN.fullmatch(value):
        raise InvalidValue(
            value,
            "not an ACM certificate ARN; use "
            "arn:aws:acm:<region>:<account id>:certificate/<certificate id>, in the ALB's region",
        )
    return value


# --- cron schedules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    def value(self, text: str, schedule: str) -> int:
        if self.names and text.lower() in self.names:
            return self.low + self.names.index(text.lower())
        if not re.fullmatch(r"\+?\d+", text):
            raise _cron_error(
                schedule,
                f"{self.name} {text!r} is not a number"
                + (f" or a name ({'-'.join((self.names[0], self.names[-1]))})" if self.names else ""),
            )
        return int(text)


_MONTHS = tuple(calendar.month_abbr[i].lower() for i in range(1, 13))
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")
CRON_ALLOWED = (
    "use 5 fields, minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or jan-dec) day-of-week "
    "(0-6 or sun-sat), each *, a value, a range a-b, a step */n or a-b/n, or a list of these, "
    "e.g. '0 3 * * 1' (03:00 each Monday); or one of " + ", ".join(DESCRIPTORS)
)


def _cron_error(schedule: str, problem: str) -> InvalidValue:
    return InvalidValue(schedule, f"not a cron schedule: {problem}; {CRON_ALLOWED}")


def _field_values(text: str, spec: _Field, schedule: str) -> tuple[set[int], bool]:
    """The values a field matches, and whether it is a star (``*``, ``?``, ``*/1``) as robfig/cron counts it."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise _cron_error(schedule, f"{spec.name} {text!r} has an empty list item")
        range_, _, step_text = part.partition("/")
        if "/" in step_text:
            raise _cron_error(schedule, f"{spec.name} {part!r} has more than one '/'")
        bounds = range_.split("-")
        if bounds[0] in ("*", "?"):
            if len(bounds) > 1:
                raise _cron_error(schedule, f"{spec.name} {part!r} is a range from '*'")
            start, end, whole = spec.low, spec.high, True
        elif len(bounds) > 2:
            raise _cron_error(schedule, f"{spec.name} {part!r} has more than one '-'")
        else:
            start = spec.value(bounds[0], schedule)
            end = spec.value(bounds[1], schedule) if len(bounds) == 2 else start
            whole = False
        step = 1
        if "/" in part:
            if not re.fullmatch(r"\+?\d+", step_text):
                raise _cron_error(schedule, f"{spec.name} step {step_text!r} is not a number")
            step = int(step_text)
            if len(bounds) == 1 and not whole:
                end = spec.high  # "N/step" means "N-max/step"
        if start < spec.low:
            raise _cron_error(schedule, f"{spec.name} {start} is below the minimum {spec.low}")
        if end > spec.high:
            sunday = " (Sunday is 0 or sun)" if spec.name == "day of week" and end == 7 else ""
            raise _cron_error(schedule, f"{spec.name} {end} is above the maximum {spec.high}{sunday}")
        if start > end:
            raise _cron_error(schedule, f"{spec.name} range {part!r} starts after it ends")
        if step == 0:
            raise _cron_error(schedule, f"{spec.name} step in {part!r} is 0")
        if step > 1 and step > end - start:
            raise _cron_error(
                schedule,
                f"{spec.name} step {step} in {part!r} is longer than its range "
                f"{start}-{end}, so it matches {start} only; write {start}",
            )
        values.update(range(start, end + 1, step))
        star = star or (whole and step == 1)
    return values, star


def check_schedule(value: Any) -> str:
    """A CronJob schedule the API server accepts (robfig/cron ``ParseStandard``), which also runs at some time."""
    if not isinstance(value, str) or not value.strip():
        raise _cron_error(str(value), "it is empty")
    if "TZ" in value:
        raise _cron_error(
            value, "Kubernetes refuses TZ= and CRON_TZ= in a schedule (a CronJob's timeZone field sets the zone)"
        )
    if value.startswith("@"):
        every = value.removeprefix("@every ")
        if value in DESCRIPTORS or (every != value and _GO_DURATION.fullmatch(every)):
            return value
        raise _cron_error(value, f"unknown descriptor {value!r}")
    fields = value.split()
    if len(fields) != len(_FIELDS):
        raise _cron_error(value, f"{len(fields)} field{'s' if len(fields) != 1 else ''} instead of 5")
    (_, _, (days, _), (months, _), (_, any_weekday)) = [
        _field_values(text, spec, value) for text, spec in zip(fields, _FIELDS, strict=True)
    ]
    # With a day-of-week of '*', a run needs one of the days in one of the months (Feb 29 counts).
    if any_weekday and not any(day <= calendar.monthrange(2024, month)[1] for day in days for month in months):
        raise _cron_error(value, f"day of month {fields[2]!r} never falls in month {fields[3]!r}, so it never runs")
    return value


def check_list_of_names(owner: str, field: str, value: Any) -> None:
    """Refuse a bare string where a list of names is meant: Python would iterate it letter by letter."""
    if isinstance(value, str | bytes):
        raise ValueError(
            f"{owner}.{field}={value!r}: a single string, which would be read as one name per "
            f"letter; give a list, e.g. [{value!r}]"
        )


def checked_as(field: str, check: Callable[[Any], Any]) -> Callable[[Any], None]:
    """``check`` with its :class:`InvalidValue` raised as ``<field>=<value>: <problem>`` (:meth:`InvalidValue.of`),
    for a value checked when it is known (an Output's, by :func:`mlplat.components.options.checked_when_known`)."""

    def named(value: Any) -> None:
        try:
            check(value)
        except InvalidValue as exc:
            raise exc.of(field) from None

    return named


SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
"""TLS 1.3 and 1.2 only (AWS's recommended ALB policy); the controller's default, ELBSecurityPolicy-2016-08
(aws-load-balancer-controller v2.13.0, pkg/config/controller_config.go), still accepts TLS 1.0 and 1.1."""
