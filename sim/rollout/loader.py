"""Load a manifests folder and resolve what the simulator runs.

Reads ``kustomization.yaml``'s ``resources`` (or every ``*.yaml`` in the folder, sorted),
validates the Argo kinds strictly (:mod:`sim.rollout.manifest`), checks the references between
objects (templates, Services, VirtualService route), substitutes ``{{args.X}}`` and compiles
every metric into :class:`sim.rollout.analysis.MetricSpec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sim.config import EngineConfig
from sim.errors import ManifestError
from sim.rollout.analysis import DEFAULT_CONSECUTIVE_ERROR_LIMIT, MetricSpec
from sim.rollout.expr import compile_expr
from sim.rollout.podargs import engine_config_from_args
from sim.rollout.manifest import AnalysisTemplate, Argument, RolloutAnalysis, Rollout, describe_validation_error

# A student's folder often holds only a Rollout and an AnalysisTemplate (exercise 6.3).
_COPY_ROUTING = (
    "a folder of your own needs the Services and the VirtualService the Rollout routes through: "
    "copy services.yaml and virtualservice.yaml from the course's manifests/ next to your rollout.yaml"
)
_ARG_REF = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


@dataclass(frozen=True)
class Source:
    file: str
    doc: int  # 0-based index of the document in its file
    multi: bool

    def where(self) -> str:
        return f"{self.file} (document {self.doc + 1})" if self.multi else self.file


@dataclass(frozen=True)
class ResolvedAnalysis:
    """An AnalysisRun to create: its metrics, and the templates they came from."""

    templates: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]

    @property
    def name(self) -> str:
        return "+".join(self.templates)


@dataclass(frozen=True)
class Manifests:
    folder: str
    rollout: Rollout
    rollout_source: Source
    templates: dict[str, AnalysisTemplate]
    services: tuple[str, ...]
    container_args: tuple[str, ...]  # the Rollout's first container: command + args
    engine_config: EngineConfig  # what each replica runs, read from container_args
    background: ResolvedAnalysis | None
    step_analyses: dict[int, ResolvedAnalysis]  # step index -> its run

    @property
    def replicas(self) -> int:
        return self.rollout.spec.replicas

    @property
    def canary(self):
        return self.rollout.spec.strategy.canary


def load_manifests(folder: str | Path, fill_from: str | Path | None = None) -> Manifests:
    """Load ``folder``. With ``fill_from`` (e.g. the course's manifests), the AnalysisTemplates,
    Services and VirtualServices that ``folder`` lacks are taken from there: a student may hand
    in only a Rollout and an AnalysisTemplate (exercise 6.3). Objects in ``folder`` win."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder; pass --manifests with the folder holding rollout.yaml")
    files = _resource_files(folder)
    extra_files = _resource_files(Path(fill_from)) if fill_from is not None else []
    rollouts: list[tuple[dict, Source]] = []
    raw_templates: list[tuple[dict, Source]] = []
    services: list[str] = []
    vservices: list[tuple[dict, Source]] = []
    for path in [*files, *extra_files]:
        filler = path in extra_files and path not in files
        rel = path.name if not filler else f"{Path(fill_from).name}/{path.name}"
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text())]
        except yaml.YAMLError as exc:
            raise ManifestError(_yaml_problem(path, exc)) from None
        docs = [d for d in docs if d is not None]
        for i, doc in enumerate(docs):
            src = Source(rel, i, len(docs) > 1)
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise ManifestError(f"{src.where()}: expected a Kubernetes object with apiVersion and kind")
            kind = doc["kind"]
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
            if filler and (
                kind == "Rollout"
                or (kind == "AnalysisTemplate" and any((d.get("metadata") or {}).get("name") == name for d, _ in raw_templates))
                or (kind == "Service" and name in services)
                or (kind == "VirtualService" and any((d.get("metadata") or {}).get("name") == name for d, _ in vservices))
            ):
                continue
            if kind == "Rollout":
                rollouts.append((doc, src))
            elif kind == "AnalysisTemplate":
                raw_templates.append((doc, src))
            elif kind == "Service":
                services.append(str(name))
            elif kind == "VirtualService":
                vservices.append((doc, src))
    if len(rollouts) != 1:
        found = ", ".join(s.where() for _, s in rollouts) or "none"
        raise ManifestError(f"{folder}: expected exactly one Rollout, found {len(rollouts)} ({found})")
    rdoc, rsrc = rollouts[0]
    rollout = _validate(Rollout, rdoc, rsrc)
    templates: dict[str, AnalysisTemplate] = {}
    template_src: dict[str, Source] = {}
    for doc, src in raw_templates:
        t = _validate(AnalysisTemplate, doc, src)
        if t.metadata.name in templates:
            raise ManifestError(f"{src.where()}: AnalysisTemplate {t.metadata.name!r} is defined twice")
        templates[t.metadata.name] = t
        template_src[t.metadata.name] = src
    canary = rollout.spec.strategy.canary
    _check_routing(rollout, rsrc, services, vservices)
    background = None
    if canary.analysis is not None:
        background = _resolve(canary.analysis, "spec.strategy.canary.analysis", rsrc, templates, template_src)
        start = canary.analysis.startingStep or 0
        if not 0 <= start <= len(canary.steps):
            raise ManifestError(
                f"{rsrc.where()}: spec.strategy.canary.analysis.startingStep: expected a step index from 0 to "
                f"{len(canary.steps)}, got {start}"
            )
    step_analyses = {}
    for i, step in enumerate(canary.steps):
        set_fields = [f for f in ("setWeight", "pause", "analysis") if getattr(step, f) is not None]
        if len(set_fields) != 1:
            raise ManifestError(
                f"{rsrc.where()}: spec.strategy.canary.steps[{i}]: expected exactly one of setWeight, pause, "
                f"analysis, got {', '.join(set_fields) or 'none'}"
            )
        if step.analysis is not None:
            step_analyses[i] = _resolve(step.analysis, f"spec.strategy.canary.steps[{i}].analysis", rsrc, templates, template_src)
    args = _container_args(rollout, rsrc)
    engine_config = engine_config_from_args(args, rsrc.where())
    _check_gpu_limit(rollout, rsrc, engine_config)
    return Manifests(
        folder=str(folder),
        rollout=rollout,
        rollout_source=rsrc,
        templates=templates,
        services=tuple(services),
        container_args=args,
        engine_config=engine_config,
        background=background,
        step_analyses=step_analyses,
    )


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """Where the parser stopped (the file as given, line and column) and the usual cause: most
    errors a student meets ("mapping values are not allowed here", "expected <block end>") come
    from a line indented unlike its neighbours."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}: line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    return (f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}); check that line's indentation "
            f"against the lines above it (YAML nests by spaces, tabs are not allowed) and that each key "
            f"is followed by ': '")


def _resource_files(folder: Path) -> list[Path]:
    kust = folder / "kustomization.yaml"
    if kust.exists():
        try:
            data = yaml.safe_load(kust.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ManifestError(_yaml_problem(kust, exc)) from None
        resources = data.get("resources")
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise ManifestError("kustomization.yaml: resources: expected a list of file names")
        out = []
        for i, name in enumerate(resources):
            p = folder / name
            if p.is_dir():
                continue  # a nested kustomization (e.g. queue-scaling/) is not part of the rollout
            if not p.is_file():
                raise ManifestError(f"kustomization.yaml: resources[{i}]: file {name!r} not found in {folder}")
            out.append(p)
        return out
    out = sorted(p for p in folder.glob("*.yaml") if p.is_file()) + sorted(p for p in folder.glob("*.yml") if p.is_file())
    if not out:
        raise ManifestError(f"{folder}: no .yaml files found")
    return out


def _validate(model, doc: dict, src: Source):
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ManifestError(f"{src.where()}: {describe_validation_error(exc, model)}") from None


def _check_routing(rollout: Rollout, src: Source, services: list[str], vservices) -> None:
    c = rollout.spec.strategy.canary
    base = "spec.strategy.canary"
    for field in ("canaryService", "stableService"):
        name = getattr(c, field)
        if name is None:
            raise ManifestError(
                f"{src.where()}: {base}.{field}: required field is missing (the simulator models Istio "
                "host-level routing between a canary and a stable Service)"
            )
        if name not in services:
            raise ManifestError(
                f"{src.where()}: {base}.{field}: Service {name!r} is not defined in the manifests "
                f"(found: {', '.join(services) or 'none'}); {_COPY_ROUTING}"
            )
    if c.trafficRouting is None:
        raise ManifestError(f"{src.where()}: {base}.trafficRouting: required field is missing (istio.virtualService)")
    ref = c.trafficRouting.istio.virtualService
    match = [(d, s) for d, s in vservices if d.get("metadata", {}).get("name") == ref.name]
    if not match:
        raise ManifestError(
            f"{src.where()}: {base}.trafficRouting.istio.virtualService.name: VirtualService {ref.name!r} "
            f"is not defined in the manifests; {_COPY_ROUTING}"
        )
    vs, vsrc = match[0]
    routes = (vs.get("spec") or {}).get("http") or []
    wanted = ref.routes or ([routes[0].get("name")] if len(routes) == 1 else None)
    if wanted is None:
        raise ManifestError(
            f"{src.where()}: {base}.trafficRouting.istio.virtualService.routes: required when the "
            f"VirtualService has {len(routes)} http routes"
        )
    for rname in wanted:
        found = [r for r in routes if r.get("name") == rname]
        if not found:
            raise ManifestError(f"{vsrc.where()}: spec.http: no route named {rname!r} (the Rollout routes it)")
        hosts = {((d.get("destination") or {}).get("host")) for d in found[0].get("route") or []}
        for svc in (c.canaryService, c.stableService):
            if svc not in hosts:
                raise ManifestError(
                    f"{vsrc.where()}: spec.http[{routes.index(found[0])}].route: expected a destination with "
                    f"host {svc!r} (the Rollout's Service), found {sorted(h for h in hosts if h)}"
                )


def _resolve(analysis: RolloutAnalysis, path: str, src: Source, templates, template_src) -> ResolvedAnalysis:
    metrics: list[MetricSpec] = []
    names = []
    for ti, ref in enumerate(analysis.templates):
        if ref.clusterScope:
            raise ManifestError(
                f"{src.where()}: {path}.templates[{ti}].clusterScope: ClusterAnalysisTemplates are not "
                "simulated; use a namespaced AnalysisTemplate"
            )
        t = templates.get(ref.templateName)
        if t is None:
            raise ManifestError(
                f"{src.where()}: {path}.templates[{ti}].templateName: AnalysisTemplate "
                f"{ref.templateName!r} not found (defined: {', '.join(sorted(templates)) or 'none'})"
            )
        names.append(t.metadata.name)
        tsrc = template_src[t.metadata.name]
        args = _merge_args(t.spec.args, analysis.args, f"{src.where()}: {path}.args", tsrc)
        dry = [re.compile(d.metricName) for d in (*t.spec.dryRun, *analysis.dryRun)]
        for mi, m in enumerate(t.spec.metrics):
            mpath = f"{tsrc.where()}: spec.metrics[{mi}]"
            if any(s.name == m.name for s in metrics):
                raise ManifestError(f"{mpath}.name: metric {m.name!r} appears twice in one analysis run")
            if m.count is not None and m.count > 1 and m.interval is None:
                raise ManifestError(f"{mpath}.interval: required when count > 1 (got count {m.count})")
            fl = m.failureLimit if m.failureLimit is not None else 0
            csl = m.consecutiveSuccessLimit or 0
            if fl < 0 and csl <= 0:
                raise ManifestError(f"{mpath}.failureLimit: -1 turns failures off, so consecutiveSuccessLimit must be set")
            query = _substitute(m.provider.prometheus.query, args, f"{mpath}.provider.prometheus.query")
            succ = _substitute(m.successCondition, args, f"{mpath}.successCondition") if m.successCondition else None
            fail = _substitute(m.failureCondition, args, f"{mpath}.failureCondition") if m.failureCondition else None
            metrics.append(
                MetricSpec(
                    name=m.name,
                    query=query.strip(),
                    template=t.metadata.name,
                    success=compile_expr(succ) if succ else None,
                    failure=compile_expr(fail) if fail else None,
                    interval_s=m.interval,
                    initial_delay_s=m.initialDelay or 0.0,
                    count=m.count,
                    failure_limit=fl,
                    inconclusive_limit=m.inconclusiveLimit or 0,
                    consecutive_error_limit=(
                        m.consecutiveErrorLimit if m.consecutiveErrorLimit is not None else DEFAULT_CONSECUTIVE_ERROR_LIMIT
                    ),
                    consecutive_success_limit=csl,
                    dry_run=any(rx.fullmatch(m.name) for rx in dry),
                )
            )
    return ResolvedAnalysis(tuple(names), tuple(metrics))


def _merge_args(declared: list[Argument], given: list[Argument], where: str, tsrc: Source) -> dict[str, str]:
    values: dict[str, str | None] = {a.name: a.value for a in declared}
    for a in given:
        if a.valueFrom is not None:
            raise ManifestError(f"{where}: argument {a.name!r}: valueFrom is not simulated; give a literal value")
        if a.name in values:
            values[a.name] = a.value
    missing = [n for n, v in values.items() if v is None]
    if missing:
        raise ManifestError(
            f"{where}: AnalysisTemplate in {tsrc.where()} needs args {', '.join(missing)}; add them with a value"
        )
    return values  # type: ignore[return-value]


def _substitute(text: str, args: dict[str, str], where: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name not in args:
            raise ManifestError(f"{where}: failed to resolve {{{{args.{name}}}}}: the template declares no such arg")
        return args[name]

    return _ARG_REF.sub(repl, text)


def _check_gpu_limit(rollout: Rollout, src: Source, config) -> None:
    """tp x dp GPUs must fit the serving container's ``resources.limits nvidia.com/gpu`` where one is
    set (each rank needs its own GPU in the pod, or vLLM fails at start-up); sim.parallel checks it."""
    from sim.catalog import get_model
    from sim.errors import ConfigError
    from sim.parallel import ParallelLayout

    c = rollout.spec.template["spec"]["containers"][0]
    limit = ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
    if limit is None:
        return
    try:
        gpus = int(limit)
    except (TypeError, ValueError):
        raise ManifestError(f"{src.where()}: spec.template.spec.containers[0].resources.limits.nvidia.com/gpu: "
                            f"expected a whole number of GPUs, got {limit!r}") from None
    try:
        ParallelLayout.of(config).check(get_model(config.model), gpus)
    except ConfigError as exc:
        raise ManifestError(f"{src.where()}: spec.template.spec.containers[0]: {exc} "
                            f"(resources.limits nvidia.com/gpu)") from None


def _container_args(rollout: Rollout, src: Source) -> tuple[str, ...]:
    spec = rollout.spec.template.get("spec") if isinstance(rollout.spec.template, dict) else None
    containers = (spec or {}).get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise ManifestError(f"{src.where()}: spec.template.spec.containers: expected a list with the serving container")
    c = containers[0]
    out: list[Any] = list(c.get("command") or []) + list(c.get("args") or [])
    if not all(isinstance(a, str) for a in out):
        raise ManifestError(f"{src.where()}: spec.template.spec.containers[0].args: expected strings")
    return tuple(out)
