"""The emulator image's Dockerfile, checked without Docker.

Docker's daemon is not available where the tests run, so the image is never built here.
What can be checked: the Dockerfile's promises (slim base, numeric non-root user, health
check, entrypoint) and that the packages it installs are enough to import what runs in the
image (the judge, the queue worker, the CLI): the import test below blocks every third-party
module that is not one of those packages or their dependencies.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_user_healthcheck_entrypoint():
    ins = _instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0, "runAsNonRoot needs a numeric non-root USER"
    health = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    entry = [rest for word, rest in ins if word == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["servelab", "serve"]
    # The user comes after every install step (nothing is installed as the runtime user).
    last_run = max(i for i, (word, _) in enumerate(ins) if word == "RUN")
    assert [i for i, (word, _) in enumerate(ins) if word == "USER"][-1] > last_run


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "manifests"} <= ignored
    copied = {rest.split()[0] for word, rest in _instructions() if word == "COPY"}
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"


def _pinned() -> dict[str, str]:
    run = next(rest for word, rest in _instructions() if word == "RUN" and "==" in rest)
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s]*)", run))


def _top_level_names(dist_name: str, seen: set[str]) -> set[str]:
    """Importable top-level names of a distribution and, recursively, of what it requires."""
    key = dist_name.lower().replace("_", "-")
    if key in seen:
        return set()
    seen.add(key)
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return set()
    names = set((dist.read_text("top_level.txt") or "").split())
    for f in dist.files or []:
        top = f.parts[0]
        if top.endswith(".py"):
            names.add(top[:-3])
        elif "." not in top and not top.endswith("-info"):
            names.add(top)
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        names |= _top_level_names(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0], seen)
    return names


def test_pins_satisfy_the_project_requirements():
    """The image pins exact versions (reproducible builds); each must be one that
    pyproject.toml accepts. (Equality with what the tests happen to run with would break every
    time PyPI publishes a release, since CI installs the newest allowed versions.)"""
    import tomllib

    from packaging.requirements import Requirement

    pins = _pinned()
    assert {"fastapi", "uvicorn", "prometheus-client", "httpx", "redis", "numpy", "simpy", "pyyaml"} <= set(pins)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = {}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        specs[req.name.lower()] = req.specifier
    for name, version in pins.items():
        spec = specs.get(name.lower())
        if spec is not None:
            assert spec.contains(version), f"{name}: Dockerfile pins {version}, pyproject.toml wants {spec}"


BLOCKER = r"""
import importlib.abc, sys
allowed = set(sys.argv[1].split(",")) | set(sys.stdlib_module_names) | {"sim", "lab", "tests", "_virtualenv"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        # _sysconfigdata_* is the interpreter's own, though not in stdlib_module_names.
        if top not in allowed and not top.startswith("_sysconfigdata"):
            raise ModuleNotFoundError(f"{name} is not installed in the image", name=name)
        return None
sys.meta_path.insert(0, Block())
import importlib
for module in sys.argv[2].split(","):
    importlib.import_module(module)
# The judge and the worker import their libraries when built, not at import time.
from lab.judge import Judge, Question
Judge([Question("q", "a")], [("svc", "http://127.0.0.1:9/v1")])
from lab.queue_worker import QueueWorker, WorkerConfig
QueueWorker(WorkerConfig())
from lab.cli.main import main
for argv in (["serve", "--help"],) if importlib.util.find_spec("lab.cli.serve") else ():
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, exc.code
print("ok")
"""


def test_the_image_packages_are_enough_for_what_runs_in_it():
    seen: set[str] = set()
    allowed: set[str] = set()
    for name in _pinned():
        allowed |= _top_level_names(name, seen)
    modules = ["lab.judge", "lab.queue_worker", "lab.cli.main", "sim.autoscale"]
    for optional in ("lab.server.app", "lab.cli.serve"):
        if (ROOT / (optional.replace(".", "/") + ".py")).is_file():
            modules.append(optional)
    proc = subprocess.run([sys.executable, "-c", BLOCKER, ",".join(sorted(allowed)), ",".join(modules)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_the_blocker_does_block():
    # The check above is only worth something if a missing package really fails it.
    proc = subprocess.run([sys.executable, "-c", BLOCKER, "yaml", "lab.judge"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert "is not installed in the image" in proc.stderr
