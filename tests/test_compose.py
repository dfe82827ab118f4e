"""docker-compose.yml and the Dockerfiles, checked without Docker (it cannot run here).

The file is validated against the Compose Specification's JSON schema (vendored by
check-jsonschema), then checked for what the schema cannot see: images or builds that exist,
variables documented in .env.example, dependencies that exist, the worker's GPU, and a web
image without TensorFlow. Every checker is also run on a broken copy, so it can fail.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from stylequeue.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
WEB_DOCKERFILE = ROOT / "docker" / "web.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"
GPU_HEAVY = re.compile(r"\b(tensorflow|keras|tf-nightly|jax|torch)\b", re.I)

Doc = dict[str, Any]


def load_yaml(text: str) -> Doc:
    return YAML(typ="safe").load(text)


@pytest.fixture(scope="module")
def text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def doc(text: str) -> Doc:
    return load_yaml(text)


# ---- checkers: each returns a list of problems (empty = fine) --------------------------------


def compose_schema() -> Doc:
    """The Compose Specification schema as shipped inside check-jsonschema."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(doc: Doc) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def image_problems(doc: Doc, root: Path = ROOT) -> list[str]:
    """Every service has an image or a build, and every build's Dockerfile exists."""
    problems = []
    for name, service in doc["services"].items():
        build = service.get("build")
        if not service.get("image") and not build:
            problems.append(f"{name}: neither image nor build")
        if build:
            build = {"context": build} if isinstance(build, str) else build
            context = root / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} missing")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} missing")
    return problems


def referenced_variables(text: str) -> dict[str, bool]:
    """``${VAR...}`` and ``$VAR`` in the compose text -> whether it is required (``:?``/``?``).

    ``$$`` is Compose's escape for a literal ``$`` (expanded in the container), not a variable.
    """
    text = text.replace("$$", "")
    found: dict[str, bool] = {}
    for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?", text):
        found[match[1]] = found.get(match[1], False) or (match[2] or "").endswith("?")
    for match in re.finditer(r"\$([A-Za-z_][A-Za-z0-9_]*)", text):
        found.setdefault(match[1], False)
    return found


def env_example_problems(compose_text: str, env_text: str) -> list[str]:
    """Every variable is in .env.example (commented with its default is fine for optional
    ones); required ones must be set there, uncommented, so a copied .env names them."""
    listed = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", env_text, re.M))
    uncommented = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", env_text, re.M))
    problems = []
    for var, required in sorted(referenced_variables(compose_text).items()):
        if var not in listed:
            problems.append(f"{var} is used in docker-compose.yml but not in .env.example")
        elif required and var not in uncommented:
            problems.append(f"{var} is required but commented out in .env.example")
    return problems


def dependency_problems(doc: Doc) -> list[str]:
    problems = []
    services = doc["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target in depends if isinstance(depends, list) else depends.keys():
            if target not in services:
                problems.append(f"{name} depends on unknown service {target}")
            elif target == name:
                problems.append(f"{name} depends on itself")
    return problems


def volume_problems(doc: Doc) -> list[str]:
    """Named volumes used by services are declared at the top level."""
    declared = set(doc.get("volumes") or {})
    problems = []
    for name, service in doc["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")) and source not in declared:
                problems.append(f"{name} uses undeclared volume {source}")
    return problems


def gpu_problems(service: Doc) -> list[str]:
    """One NVIDIA GPU reserved per container, and nothing that stops ``--scale``."""
    devices = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    gpus = [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]
    problems = []
    if len(gpus) != 1 or gpus[0].get("count") != 1:
        problems.append("worker must reserve exactly one nvidia GPU (count: 1)")
    if "container_name" in service:
        problems.append("worker has container_name: it could not be scaled")
    if service.get("ports"):
        problems.append("worker publishes ports: replicas would collide")
    command = " ".join(map(str, service.get("command") or []))
    if "--concurrency 1" not in command or "-Q style" not in command:
        problems.append("worker must consume `style` with concurrency 1")
    return problems


def installed_extras(dockerfile_text: str) -> set[str]:
    """Extras of this project that a Dockerfile pip-installs (``.[a,b]``)."""
    extras: set[str] = set()
    for group in re.findall(r"""['"]?\.\[([^\]]*)\]""", dockerfile_text):
        extras.update(x.strip() for x in group.split(",") if x.strip())
    return extras


def web_tensorflow_problems(dockerfile_text: str, pyproject: Doc) -> list[str]:
    """The web image installs no TensorFlow, directly or through an extra or a base dep."""
    project = pyproject["project"]
    problems = []
    if not installed_extras(dockerfile_text):
        problems.append("web Dockerfile installs no extras of this project")
    requirements = list(project["dependencies"])
    for extra in sorted(installed_extras(dockerfile_text)):
        if extra not in project["optional-dependencies"]:
            problems.append(f"web Dockerfile installs unknown extra {extra}")
        requirements += project["optional-dependencies"].get(extra, [])
    for requirement in requirements:
        if GPU_HEAVY.search(requirement):
            problems.append(f"web image would install {requirement}")
    for line in dockerfile_text.splitlines():
        if "pip" in line and "install" in line and GPU_HEAVY.search(line):
            problems.append(f"web Dockerfile installs TensorFlow directly: {line.strip()}")
    if not re.search(r"^FROM python:3\.11-slim\b", dockerfile_text, re.M):
        problems.append("web image must be built FROM python:3.11-slim")
    if not re.search(r"^USER (?!root\b)\S+", dockerfile_text, re.M):
        problems.append("web image must run as a non-root USER")
    return problems


# ---- the real files ------------------------------------------------------------------------


def test_schema_valid_with_check_jsonschema_cli() -> None:
    cli = Path(sys.executable).with_name("check-jsonschema")
    argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "check_jsonschema"]
    done = subprocess.run(
        [*argv, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_valid(doc: Doc) -> None:
    assert schema_errors(doc) == []


def test_services_present(doc: Doc) -> None:
    expected = {
        "postgres", "redis", "minio", "minio-init", "migrate", "web", "worker", "hooks", "sweeper"
    }  # fmt: skip
    assert expected <= set(doc["services"])
    assert doc["services"]["flower"]["profiles"] == ["monitoring"]
    for name in ("postgres", "redis", "minio", "web"):
        assert doc["services"][name].get("healthcheck"), f"{name} needs a healthcheck"


def test_images_and_builds(doc: Doc) -> None:
    assert image_problems(doc) == []


def test_env_example_documents_every_variable(text: str) -> None:
    assert referenced_variables(text)  # the compose file does use settings from .env
    assert env_example_problems(text, ENV_EXAMPLE.read_text()) == []


def test_depends_on_targets_exist(doc: Doc) -> None:
    assert dependency_problems(doc) == []
    web = doc["services"]["web"]["depends_on"]
    assert web["migrate"]["condition"] == "service_completed_successfully"
    migrate = doc["services"]["migrate"]["depends_on"]
    assert migrate["postgres"]["condition"] == "service_healthy"


def test_volumes_declared(doc: Doc) -> None:
    assert volume_problems(doc) == []


def test_worker_reserves_one_gpu(doc: Doc) -> None:
    assert gpu_problems(doc["services"]["worker"]) == []
    for name, service in doc["services"].items():
        if name != "worker":
            assert "deploy" not in service, f"{name} should not reserve devices"


def duration_seconds(value: str) -> float:
    """Compose's duration (``20s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


def stop_grace_problems(service: Doc) -> list[str]:
    """Docker must wait longer than the worker's shutdown grace before it SIGKILLs the
    worker, or a preempted job dies without its last checkpoint."""
    env = service.get("environment") or {}
    grace = float(env.get("STYLEQUEUE_SHUTDOWN_GRACE_SECONDS") or Settings.shutdown_grace_seconds)
    period = service.get("stop_grace_period")
    if period is None:
        return ["worker has no stop_grace_period (Docker's default is 10s)"]
    if duration_seconds(str(period)) <= grace:
        return [f"worker stop_grace_period {period} is not above the {grace:g}s shutdown grace"]
    return []


def test_worker_stop_grace_exceeds_shutdown_grace(doc: Doc) -> None:
    assert stop_grace_problems(doc["services"]["worker"]) == []


def test_stop_grace_checker_catches_mistakes(doc: Doc) -> None:
    worker = copy.deepcopy(doc["services"]["worker"])
    worker["stop_grace_period"] = "10s"
    assert stop_grace_problems(worker)
    del worker["stop_grace_period"]
    assert stop_grace_problems(worker)
    assert duration_seconds("1m30s") == 90.0


def test_web_image_has_no_tensorflow() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert web_tensorflow_problems(WEB_DOCKERFILE.read_text(), pyproject) == []


def test_worker_image_is_gpu_tensorflow() -> None:
    text = WORKER_DOCKERFILE.read_text()
    assert re.search(r"tensorflow/tensorflow:[\w.]+-gpu", text)
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in text
    assert "KERAS_HOME=" in text


# ---- the checkers fail on broken copies -----------------------------------------------------


def test_schema_checker_catches_mistakes(doc: Doc) -> None:
    broken = copy.deepcopy(doc)
    broken["services"]["web"]["healthcheck"]["interval"] = ["10s"]
    broken["services"]["redis"]["restart_policy"] = "always"  # not a Compose key
    errors = schema_errors(broken)
    assert any("web/healthcheck/interval" in e for e in errors)
    assert any("restart_policy" in e for e in errors)


def test_image_checker_catches_mistakes(doc: Doc, tmp_path: Path) -> None:
    broken = copy.deepcopy(doc)
    del broken["services"]["redis"]["image"]
    broken["services"]["web"]["build"] = {"context": ".", "dockerfile": "docker/nope.Dockerfile"}
    problems = image_problems(broken)
    assert "redis: neither image nor build" in problems
    assert any(p.startswith("web: Dockerfile") for p in problems)
    assert image_problems(doc, root=tmp_path)  # the Dockerfiles are not there


def test_env_checker_catches_mistakes(text: str) -> None:
    env = ENV_EXAMPLE.read_text()
    added = text + "\n# ${UNDOCUMENTED_VAR:-x} $ALSO_UNDOCUMENTED $$NOT_A_VARIABLE\n"
    problems = env_example_problems(added, env)
    assert any("UNDOCUMENTED_VAR" in p for p in problems)
    assert any("ALSO_UNDOCUMENTED" in p for p in problems)
    assert not any("NOT_A_VARIABLE" in p for p in problems)
    commented = re.sub(r"^POSTGRES_PASSWORD=", "# POSTGRES_PASSWORD=", env, flags=re.M)
    assert env_example_problems(text, commented) == [
        "POSTGRES_PASSWORD is required but commented out in .env.example"
    ]
    dropped = "\n".join(line for line in env.splitlines() if "HTTP_PORT" not in line)
    assert env_example_problems(text, dropped) == [
        "HTTP_PORT is used in docker-compose.yml but not in .env.example"
    ]


def test_dependency_checker_catches_mistakes(doc: Doc) -> None:
    broken = copy.deepcopy(doc)
    broken["services"]["web"]["depends_on"]["postgress"] = {"condition": "service_healthy"}
    broken["services"]["sweeper"]["depends_on"] = ["sweeper"]
    assert sorted(dependency_problems(broken)) == [
        "sweeper depends on itself",
        "web depends on unknown service postgress",
    ]


def test_volume_checker_catches_mistakes(doc: Doc) -> None:
    broken = copy.deepcopy(doc)
    del broken["volumes"]["keras-cache"]
    assert volume_problems(broken) == ["worker uses undeclared volume keras-cache"]


def test_gpu_checker_catches_mistakes(doc: Doc) -> None:
    worker = doc["services"]["worker"]
    no_gpu = copy.deepcopy(worker)
    del no_gpu["deploy"]
    assert gpu_problems(no_gpu)
    two = copy.deepcopy(worker)
    two["deploy"]["resources"]["reservations"]["devices"][0]["count"] = 2
    assert gpu_problems(two)
    pinned = copy.deepcopy(worker)
    pinned["container_name"] = "worker"
    pinned["ports"] = ["9999:9999"]
    pinned["command"] = ["celery", "-A", "stylequeue.worker.app", "worker"]
    assert len(gpu_problems(pinned)) == 3


def test_tensorflow_checker_catches_mistakes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    good = WEB_DOCKERFILE.read_text()
    with_worker = good.replace(".[web,s3,postgres]", ".[web,worker,s3,postgres]")
    assert any("tensorflow" in p for p in web_tensorflow_problems(with_worker, pyproject))
    direct = good + "\nRUN pip install tensorflow-cpu\n"
    assert any("directly" in p for p in web_tensorflow_problems(direct, pyproject))
    as_root = good.replace("USER stylequeue", "USER root")
    assert web_tensorflow_problems(as_root, pyproject) == ["web image must run as a non-root USER"]
    heavy_base = copy.deepcopy(pyproject)
    heavy_base["project"]["dependencies"].append("keras>=3")
    assert web_tensorflow_problems(good, heavy_base) == ["web image would install keras>=3"]
