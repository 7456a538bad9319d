"""Reading the manifests strictly: pydantic models of the Argo Rollouts fields ServeLab
simulates, with extra="forbid", so a misspelt field, a wrong type or a bad duration is a
:class:`sim.errors.ManifestError` naming the file and YAML path, e.g.
``rollout.yaml: spec.strategy.canary.steps[2].pause.duration: expected a duration like 30s,
5m, 1h, got "1hour"``.

Fields that Argo accepts but the simulator cannot model (other metric providers, experiment
steps, header routes...) are an error that says so, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.rollout.durations import parse_go_duration, parse_pause_duration
from sim.rollout.expr import ExprSyntaxError, compile_expr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _int_or_digits(v: Any) -> Any:
    """Kubernetes int-or-string: 3 or "3" (count, failureLimit...)."""
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return v


IntOrString = Annotated[int, BeforeValidator(_int_or_digits)]


def _duration(v: Any) -> float:
    if not isinstance(v, str):
        raise ValueError(f"expected a duration like 30s, 5m, 1h, got {v!r}")
    return parse_go_duration(v)


def _pause_duration(v: Any) -> float:
    try:
        return parse_pause_duration(v)
    except ValueError:
        raise ValueError(f'expected a duration like 30s, 5m, 1h, got "{v}"') from None


GoDuration = Annotated[float, BeforeValidator(_duration)]
PauseDuration = Annotated[float, BeforeValidator(_pause_duration)]


class ObjectMeta(BaseModel):
    # Kubernetes metadata has many fields the simulator does not need; it keeps them.
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# -- AnalysisTemplate ---------------------------------------------------------------------------


class PrometheusProvider(_Strict):
    address: str | None = None
    query: str
    timeout: int | None = None
    insecure: bool | None = None
    headers: list[dict[str, str]] | None = None


class MetricProvider(_Strict):
    prometheus: PrometheusProvider

    @model_validator(mode="before")
    @classmethod
    def _only_prometheus(cls, data: Any) -> Any:
        if isinstance(data, dict):
            other = [k for k in data if k != "prometheus"]
            if other:
                raise ValueError(
                    f"provider {other[0]!r} is not simulated: ServeLab evaluates the prometheus provider "
                    "against its simulated series (write the metric as a Prometheus query)"
                )
        return data


class Metric(_Strict):
    name: str
    provider: MetricProvider
    interval: GoDuration | None = None
    initialDelay: GoDuration | None = None
    count: IntOrString | None = None
    successCondition: str | None = None
    failureCondition: str | None = None
    failureLimit: IntOrString | None = None
    inconclusiveLimit: IntOrString | None = None
    consecutiveErrorLimit: IntOrString | None = None
    consecutiveSuccessLimit: IntOrString | None = None

    @field_validator("successCondition", "failureCondition")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compile_expr(v)
            except ExprSyntaxError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("count")
    @classmethod
    def _count_positive(cls, v):
        if v is not None and v < 0:
            raise ValueError(f"expected a count >= 0, got {v}")
        return v


class Argument(_Strict):
    name: str
    value: str | None = None
    valueFrom: dict[str, Any] | None = None


class DryRun(_Strict):
    metricName: str


class MeasurementRetention(_Strict):
    metricName: str
    limit: int


class AnalysisTemplateSpec(_Strict):
    metrics: list[Metric] = Field(min_length=1)
    args: list[Argument] = Field(default_factory=list)
    dryRun: list[DryRun] = Field(default_factory=list)
    measurementRetention: list[MeasurementRetention] = Field(default_factory=list)


class AnalysisTemplate(_Strict):
    apiVersion: Literal["argoproj.io/v1alpha1"]
    kind: Literal["AnalysisTemplate"]
    metadata: ObjectMeta
    spec: AnalysisTemplateSpec


# -- Rollout ------------------------------------------------------------------------------------


class TemplateRef(_Strict):
    templateName: str
    clusterScope: bool | None = None


class RolloutAnalysis(_Strict):
    templates: list[TemplateRef] = Field(min_length=1)
    args: list[Argument] = Field(default_factory=list)
    dryRun: list[DryRun] = Field(default_factory=list)
    measurementRetention: list[MeasurementRetention] = Field(default_factory=list)


class BackgroundAnalysis(RolloutAnalysis):
    startingStep: int | None = None


class Pause(_Strict):
    duration: PauseDuration | None = None


class Step(_Strict):
    setWeight: int | None = Field(default=None, ge=0, le=100)
    pause: Pause | None = None
    analysis: RolloutAnalysis | None = None


class IstioVirtualServiceRef(_Strict):
    name: str
    routes: list[str] | None = None


class IstioRouting(_Strict):
    virtualService: IstioVirtualServiceRef


class TrafficRouting(_Strict):
    istio: IstioRouting


class CanaryStrategy(_Strict):
    steps: list[Step] = Field(default_factory=list)
    canaryService: str | None = None
    stableService: str | None = None
    trafficRouting: TrafficRouting | None = None
    analysis: BackgroundAnalysis | None = None
    scaleDownDelaySeconds: int | None = None
    abortScaleDownDelaySeconds: int | None = None
    maxSurge: IntOrString | str | None = None
    maxUnavailable: IntOrString | str | None = None
    dynamicStableScale: bool | None = None


class Strategy(_Strict):
    canary: CanaryStrategy


class RolloutSpec(_Strict):
    replicas: int = Field(default=1, ge=0)
    selector: dict[str, Any]
    template: dict[str, Any]  # a PodTemplateSpec: checked by kubernetes-validate, read for args
    strategy: Strategy
    revisionHistoryLimit: int | None = None
    progressDeadlineSeconds: int | None = None
    minReadySeconds: int | None = None
    paused: bool | None = None


class Rollout(_Strict):
    apiVersion: Literal["argoproj.io/v1alpha1"]
    kind: Literal["Rollout"]
    metadata: ObjectMeta
    spec: RolloutSpec


# -- errors -------------------------------------------------------------------------------------

_PYDANTIC_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "float_type": "expected a number",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required field is missing",
    "literal_error": "expected",
    "too_short": "expected at least one item",
    "greater_than_equal": "too small",
    "less_than_equal": "too large",
}


def yaml_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "lax-", "union")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first error, as 'path: expected ..., got ...'."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("int", "str"))))
    path = yaml_path(loc)
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc[:-1]) if model is not None else []
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown field{hint}"
    if kind == "value_error":
        return f"{path}: {err['msg'].removeprefix('Value error, ')}"
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "literal_error":
        return f"{path}: {err['msg'].replace('Input should be', 'expected')}, got {got!r}"
    what = _PYDANTIC_MESSAGES.get(kind)
    if what in ("too small", "too large"):
        return f"{path}: {err['msg'].replace('Input should be', 'expected a value')}, got {got!r}"
    return f"{path}: {what or err['msg']}, got {got!r}"


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    import typing

    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return []
        ann = cur.model_fields[part].annotation
        cur = _unwrap(ann, typing)
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return []


def _unwrap(ann: Any, typing) -> Any:
    for _ in range(4):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if not args:
            return ann
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        ann = models[0] if models else args[-1]
    return ann
