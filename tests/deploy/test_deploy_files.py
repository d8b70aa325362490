"""Checks of deploy/ that need no container engine and no cluster.

Every YAML parses; every command line the deploy files give to the project's image is parsed by the
project's real argparse parsers; every environment variable they set is read by someone; every file
they mount or copy exists; ports, service names and scrape targets agree; Kubernetes manifests pass
schema validation (kubernetes-validate, offline) where a schema exists and structural checks where it
does not (RayCluster, Kustomization); `docker compose config` runs where the compose plugin exists.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from coordinator.site_identity import site_credential_sha256

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
K8S = DEPLOY / "k8s"
MAKE_SECRETS = DEPLOY / "make-secrets.sh"
PYTHON = sys.executable

CPU_IMAGE = "network-transplanting"
GPU_IMAGE = "network-transplanting-gpu"
IMAGE_ENTRYPOINT = ["/usr/bin/tini", "--", "/usr/local/bin/transplant-entrypoint"]
COORDINATOR_GRPC, COORDINATOR_METRICS, SITE_METRICS = 50051, 9100, 9101

# The project's CLIs: `python -m MODULE` -> where its parser is built.
PARSER_BUILDERS = {
    "coordinator": ("coordinator.__main__", "build_parser"),
    "site_agent": ("site_agent.cli", "build_parser"),
    "coordinator.admin": ("coordinator.admin", "build_parser"),
    "coordinator.serving": ("coordinator.serving.cli", "build_parser"),
}
# Flags whose value is a file or folder inside the container: it must lie on a mount.
PATH_FLAGS = {"--state-dir", "--workspace", "--auth-file", "--coordinator-token-file", "--token-file",
              "--tls-cert", "--tls-key", "--tls-ca", "--tls-client-ca"}
# Variables read by third-party programs in the images the deploy files use.
THIRD_PARTY_ENV = re.compile(r"^(MINIO_\w+|GF_\w+|RAY_\w+|NVIDIA_\w+|PYTHON\w+|PIP_\w+|LANG|PATH|HOME)$")
EXAMPLES = {"secrets.example.yaml", "minio.example.yaml", "site-agent.example.yaml"}


# ----------------------------------------------------------------------------------------------------
# loading


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml") and "secrets" not in p.parts)


@functools.cache
def _docs(path: Path) -> tuple:
    with path.open() as f:
        return tuple(d for d in yaml.safe_load_all(f) if d is not None)


def _compose() -> dict:
    return _docs(COMPOSE)[0]


def _k8s_docs(include_examples: bool = True) -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) if include_examples or p.name not in EXAMPLES
            for d in _docs(p) if p.name != "kustomization.yaml"]


def _image_name(image: str | None) -> str:
    if not image:
        return ""
    name = image.rsplit("/", 1)[-1]
    return name.split("@")[0].split(":")[0]


def _is_project_image(image: str | None) -> bool:
    return _image_name(image) in (CPU_IMAGE, GPU_IMAGE)


# ----------------------------------------------------------------------------------------------------
# the project's CLIs, as their own parsers define them


@functools.cache
def _parser(module: str) -> argparse.ArgumentParser:
    import importlib

    mod_name, fn = PARSER_BUILDERS[module]
    return getattr(importlib.import_module(mod_name), fn)()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: p for a in parser._actions if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
            for name, p in a.choices.items()}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001


def _command_path(module: str, argv: list[str]) -> tuple[list[str], set[str]]:
    """Subcommands named in argv (by the parser tree) and the flags valid along that path."""
    parser, path, flags = _parser(module), [], set()
    flags |= _flags(parser)
    while subs := _subparsers(parser):
        word = next((t for t in argv if t in subs), None)
        if word is None:
            break
        path.append(word)
        parser = subs[word]
        flags |= _flags(parser)
        argv = argv[argv.index(word) + 1:]
    return path, flags


def _check_flags(module: str, argv: list[str], where: str) -> list[str]:
    path, flags = _command_path(module, argv)
    used = {t.split("=", 1)[0] for t in argv if t.startswith("--")}
    return [f"{where}: `python -m {module} {' '.join(path)}` has no flag {flag}" for flag in sorted(used - flags)]


def _parse(module: str, argv: list[str], where: str) -> list[str]:
    """Parses argv with the real parser; returns the error argparse prints, if any."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parser(module).parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return [f"{where}: `python -m {module} {' '.join(argv)}` is rejected by its parser: "
                    f"{err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else exc.code}"]
    return []


@functools.cache
def _entrypoint_roles() -> dict[str, list[str]]:
    """Role word -> the command the entrypoint runs for it (from entrypoint.sh itself)."""
    text = ENTRYPOINT.read_text()
    body = text[text.index('case "$role" in'):]
    roles = {}
    heads = list(re.finditer(r"^ {4}([\w|*-]+)\)$", body, re.M))  # arms of the outer case only
    for head, nxt in zip(heads, heads[1:] + [None]):
        arm = body[head.end():nxt.start() if nxt else len(body)]
        execs = re.findall(r'^\s*exec (.+?) "\$@"\s*$', arm, re.M)
        for role in head.group(1).split("|"):
            if execs:
                roles[role] = execs[-1].split()
    return roles


def _dispatch(argv: list[str]) -> tuple[str | None, list[str]]:
    """What the image runs for CMD argv: (python module or 'ray', its argv); (None, argv) otherwise."""
    if not argv:
        return None, argv
    command = _entrypoint_roles().get(argv[0])
    if command is None:
        return None, argv
    if command[:2] == ["python", "-m"]:
        return command[2], argv[1:]
    if command[0] == "ray":
        return "ray", command[1:] + argv[1:]
    return None, argv


# ----------------------------------------------------------------------------------------------------
# the invocations the deploy files make


def _compose_invocations() -> list[tuple[str, dict, list[str]]]:
    """(service, service dict, CMD argv as the entrypoint sees it) for services on the project image."""
    out = []
    for name, svc in _compose()["services"].items():
        if not _is_project_image(svc.get("image")):
            continue
        entry = svc.get("entrypoint")
        prefix: list[str] = []
        if entry is not None:
            assert entry[:len(IMAGE_ENTRYPOINT)] == IMAGE_ENTRYPOINT, f"compose {name}: entrypoint bypasses the image's"
            prefix = entry[len(IMAGE_ENTRYPOINT):]
        command = svc.get("command", [])
        assert isinstance(command, list), f"compose {name}: give command as a list (no shell splitting)"
        out.append((name, svc, [str(a) for a in prefix + command]))
    return out


def _containers(doc: dict) -> list[tuple[str, dict, dict]]:
    """(label, container, pod spec) for every container of a workload or RayCluster document."""
    specs = []
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        specs.append((f"{kind}/{name}", doc["spec"]["template"]["spec"]))
    elif kind == "RayCluster":
        specs.append((f"RayCluster/{name} head", doc["spec"]["headGroupSpec"]["template"]["spec"]))
        for group in doc["spec"].get("workerGroupSpecs", []):
            specs.append((f"RayCluster/{name} {group['groupName']}", group["template"]["spec"]))
    return [(f"{label} {c['name']}", c, spec) for label, spec in specs
            for c in spec.get("initContainers", []) + spec["containers"]]


@functools.cache
def _configmap_data() -> dict[str, str]:
    data = {}
    for _, doc in _k8s_docs():
        if doc["kind"] == "ConfigMap":
            data.update(doc.get("data", {}))
    return data


def _env_values(container: dict) -> dict[str, str]:
    values = {}
    for env in container.get("env", []):
        if "value" in env:
            values[env["name"]] = str(env["value"])
        elif ref := env.get("valueFrom", {}).get("configMapKeyRef"):
            values[env["name"]] = _configmap_data().get(ref["key"], f"<missing {ref['key']}>")
        else:
            values[env["name"]] = f"PLACEHOLDER_{env['name']}"
    return values


def _expand(args: list[str], values: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\(([A-Za-z_]\w*)\)", lambda m: values.get(m.group(1), m.group(0)), a) for a in args]


def _k8s_invocations() -> list[tuple[str, dict, dict, list[str]]]:
    """(label, container, pod spec, args after $(VAR) expansion) for project containers with args."""
    out = []
    for _, doc in _k8s_docs():
        for label, c, spec in _containers(doc):
            if _is_project_image(c.get("image")) and c.get("args"):
                assert "command" not in c, f"{label}: `command` would bypass the image's entrypoint; use args"
                out.append((label, c, spec, _expand([str(a) for a in c["args"]], _env_values(c))))
    return out


def _all_invocations() -> list[tuple[str, str, list[str]]]:
    """(where, module, argv) for every project CLI call in compose and the k8s manifests."""
    out = []
    for name, _, argv in _compose_invocations():
        module, rest = _dispatch(argv)
        if module in PARSER_BUILDERS:
            out.append((f"compose service {name}", module, rest))
    for label, _, _, argv in _k8s_invocations():
        module, rest = _dispatch(argv)
        if module in PARSER_BUILDERS:
            out.append((label, module, rest))
    return out


def _doc_invocations() -> list[tuple[str, str, list[str]]]:
    """`python -m <cli> ...` lines in the deploy docs and scripts (with placeholders: flags only)."""
    out = []
    files = [DEPLOY / "README.md", DEPLOY / "secrets" / "README.md", MAKE_SECRETS, ENTRYPOINT]
    for path in files:
        text = path.read_text().replace("\\\n", " ")
        for m in re.finditer(r"-m (coordinator\.admin|coordinator\.serving|coordinator|site_agent)\b([^\n`|;)]*)", text):
            argv = m.group(2).split()
            out.append((f"{path.relative_to(ROOT)}: {m.group(0).strip()[:60]}", m.group(1), argv))
    return out


def _value(argv: list[str], flag: str) -> str | None:
    for i, t in enumerate(argv):
        if t == flag and i + 1 < len(argv):
            return argv[i + 1]
        if t.startswith(flag + "="):
            return t.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------------------------------
# YAML


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    assert _docs(path), f"{path} holds no YAML document"


def test_every_deploy_piece_exists():
    for rel in ("docker/Dockerfile", "docker/Dockerfile.gpu", "docker/entrypoint.sh", "docker-compose.yml",
                "k8s/kustomization.yaml", "README.md", "secrets/README.md", "make-secrets.sh", ".gitignore"):
        assert (DEPLOY / rel).is_file(), rel
    assert os.access(ENTRYPOINT, os.X_OK) and os.access(MAKE_SECRETS, os.X_OK)
    ignore = (DEPLOY / ".gitignore").read_text().split()
    assert "secrets/*" in ignore and "!secrets/README.md" in ignore


# ----------------------------------------------------------------------------------------------------
# command lines against the real parsers


def test_entrypoint_roles_run_the_project_clis():
    roles = _entrypoint_roles()
    assert roles["coordinator"] == ["python", "-m", "coordinator"]
    assert roles["site"] == ["python", "-m", "site_agent"]
    assert roles["admin"] == ["python", "-m", "coordinator.admin"]
    assert roles["predict"] == ["python", "-m", "coordinator.serving"]
    assert roles["ray-head"][:3] == ["ray", "start", "--head"] and "--block" in roles["ray-head"]
    assert roles["ray-worker"][:2] == ["ray", "start"] and "--block" in roles["ray-worker"]


def test_deploy_files_invoke_every_cli_role():
    modules = {(m, tuple(_command_path(m, argv)[0])) for _, m, argv in _all_invocations()}
    assert ("coordinator", ("serve",)) in modules
    assert ("site_agent", ("run",)) in modules
    assert ("coordinator.serving", ("serve",)) in modules
    assert any(m == "coordinator.admin" for m, _ in modules)


def test_every_flag_exists_in_the_cli():
    """Every --flag the compose file, the manifests, the docs and the scripts give a CLI is one of its flags."""
    errors = []
    for where, module, argv in _all_invocations() + _doc_invocations():
        errors += _check_flags(module, argv, where)
    assert not errors, "\n".join(errors)


def test_every_command_line_parses():
    """The complete command lines of compose services and k8s containers pass the real parsers."""
    errors = []
    for where, module, argv in _all_invocations():
        errors += _parse(module, argv, where)
    assert not errors, "\n".join(errors)


@pytest.mark.slow
def test_cli_help_runs_for_every_command_path():
    """`python -m <cli> <subcommands> --help` exits 0 for each path used: the modules are real entry points."""
    paths = {(m, tuple(_command_path(m, argv)[0])) for _, m, argv in _all_invocations() + _doc_invocations()}
    from concurrent.futures import ThreadPoolExecutor

    def run(item):
        module, path = item
        return item, subprocess.run([PYTHON, "-m", module, *path, "--help"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=300)

    with ThreadPoolExecutor(4) as pool:
        for (module, path), r in pool.map(run, sorted(paths)):
            assert r.returncode == 0, f"python -m {module} {' '.join(path)} --help: {r.stderr[-2000:]}"


@pytest.mark.slow
def test_ray_command_lines_use_real_ray_flags():
    ray = Path(PYTHON).with_name("ray")
    if not ray.exists():
        ray = shutil.which("ray")
    assert ray, "the ray CLI is part of ray[default]"
    text = subprocess.run([str(ray), "start", "--help"], capture_output=True, text=True, timeout=120).stdout
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    used = set()
    for command in _entrypoint_roles().values():
        if command[0] == "ray":
            used |= {t.split("=")[0] for t in command if t.startswith("--")}
    for line in re.findall(r"ray start ([^\n]*)", ENTRYPOINT.read_text()):  # incl. the coordinator's own node
        used |= set(re.findall(r"(--[a-z][a-z0-9-]*)", line))
    for name, _, argv in _compose_invocations():
        module, rest = _dispatch(argv)
        if module == "ray":
            used |= {t.split("=")[0] for t in rest if t.startswith("--")}
    for _, doc in _k8s_docs():
        if doc["kind"] == "RayCluster":
            groups = [doc["spec"]["headGroupSpec"], *doc["spec"]["workerGroupSpecs"]]
            used |= {f"--{k}" for g in groups for k in g.get("rayStartParams", {})}
    assert used and not used - known, f"not flags of `ray start`: {sorted(used - known)}"
    r = subprocess.run([str(ray), "health-check", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "compose health-checks the Ray head with `ray health-check`"


def test_entrypoint_dispatch(tmp_path):
    """Runs entrypoint.sh with stand-ins for python and ray that print what they were given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for prog in ("python", "ray"):
        stub = bin_dir / prog
        stub.write_text(f'#!/bin/sh\necho "{prog} $* | S3=${{TRANSPLANT_S3_ACCESS_KEY:-}}" >> "{log}"\n')
        stub.chmod(0o755)
    secret = tmp_path / "key"
    secret.write_text("AKIA-from-file\n")

    def run(*argv, **env):
        log.write_text("")
        r = subprocess.run(["sh", str(ENTRYPOINT), *argv], capture_output=True, text=True, timeout=30,
                           env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env})
        assert r.returncode == 0, r.stderr
        return log.read_text().splitlines()

    assert run("site", "run", "--site-id", "a") == ["python -m site_agent run --site-id a | S3="]
    assert run("admin", "jobs") == ["python -m coordinator.admin jobs | S3="]
    assert run("predict", "serve", "--store", "s3://b", TRANSPLANT_S3_ACCESS_KEY_FILE=str(secret)) == [
        "python -m coordinator.serving serve --store s3://b | S3=AKIA-from-file"]
    assert run("coordinator", "serve", "--ray-address", "auto") == [
        "python -m coordinator serve --ray-address auto | S3="]
    calls = run("coordinator", "serve", "--ray-address", "ray-head:6379",
                TRANSPLANT_S3_ACCESS_KEY_FILE=str(secret))
    assert calls == ["ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0 --disable-usage-stats"
                     " | S3=AKIA-from-file",
                     "python -m coordinator serve --ray-address ray-head:6379 | S3=AKIA-from-file"]
    assert run("ray-worker", "--address=ray-head:6379", "--num-gpus=1") == [
        "ray start --block --address=ray-head:6379 --num-gpus=1 | S3="]
    assert run("ray-head")[0].startswith("ray start --head --port=6379 --dashboard-host=0.0.0.0 --block")
    r = subprocess.run(["sh", str(ENTRYPOINT), "site"], capture_output=True, text=True, timeout=30,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TRANSPLANT_SITE_TOKEN_FILE": "/nonexistent"})
    assert r.returncode == 2 and "TRANSPLANT_SITE_TOKEN_FILE" in r.stderr


# ----------------------------------------------------------------------------------------------------
# environment variables


@functools.cache
def _python_sources() -> str:
    return "\n".join(p.read_text(errors="replace") for d in ("common", "coordinator", "site_agent", "transplant", "protos")
                     for p in (ROOT / d).rglob("*.py"))


def _read_by_code(name: str) -> bool:
    return re.search(rf"""["']{re.escape(name)}["']""", _python_sources()) is not None


@functools.cache
def _entrypoint_file_vars() -> set[str]:
    m = re.search(r"for name in (.*?); do", ENTRYPOINT.read_text(), re.S)
    return set(m.group(1).replace("\\", " ").split())


def _env_problem(name: str, commands: str) -> str | None:
    if _read_by_code(name) or THIRD_PARTY_ENV.match(name):
        return None
    if name.endswith("_FILE") and name[:-5] in _entrypoint_file_vars():
        return None if _read_by_code(name[:-5]) else f"{name}: the code does not read {name[:-5]}"
    if re.search(rf"\$(\(|\{{)?{re.escape(name)}\b", commands):
        return None
    return f"{name} is set but neither the code, a known third-party program, nor the command reads it"


def test_every_env_var_is_read_by_someone():
    errors = []
    for name, svc in _compose()["services"].items():
        env = svc.get("environment", {})
        names = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        commands = json.dumps([svc.get("entrypoint"), svc.get("command")])
        errors += [f"compose {name}: {p}" for n in names if (p := _env_problem(n, commands))]
    for _, doc in _k8s_docs():
        for label, c, _ in _containers(doc):
            commands = json.dumps([c.get("command"), c.get("args")])
            errors += [f"{label}: {p}" for e in c.get("env", []) if (p := _env_problem(e["name"], commands))]
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / "docker" / dockerfile).read_text().replace("\\\n", " ")
        for block in re.findall(r"^ENV (.+)$", text, re.M):
            errors += [f"{dockerfile}: {p}" for n in re.findall(r"(\w+)=", block) if (p := _env_problem(n, ""))]
    errors += [f"entrypoint.sh *_FILE list: {n} is not read by the code"
               for n in sorted(_entrypoint_file_vars()) if not _read_by_code(n)]
    assert not errors, "\n".join(errors)


def test_store_credentials_reach_every_process_that_opens_the_store():
    """The coordinator, the Predict replicas and every Ray node open the object store (Ray workers run the jobs)."""
    needed = {"TRANSPLANT_S3_ACCESS_KEY", "TRANSPLANT_S3_SECRET_KEY"}
    for name, svc, argv in _compose_invocations():
        module, rest = _dispatch(argv)
        if module == "ray" or (module in ("coordinator", "coordinator.serving") and "serve" in rest):
            env = {k.removesuffix("_FILE") for k in svc.get("environment", {})}
            assert needed <= env, f"compose {name} lacks S3 credentials"
    for _, doc in _k8s_docs():
        if doc["kind"] == "RayCluster" or doc["metadata"]["name"] in ("coordinator", "predict"):
            for label, c, _ in _containers(doc):
                assert needed <= {e["name"] for e in c.get("env", [])}, f"{label} lacks S3 credentials"


# ----------------------------------------------------------------------------------------------------
# files: images, mounts, secrets


def _dockerfile_copies(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    return [(src, dst) for flags, src, dst in re.findall(r"^COPY (--\S+ )?(\S+) (\S+)$", text, re.M) if not flags]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile(dockerfile):
    path = DEPLOY / "docker" / dockerfile
    text = path.read_text()
    for src, _ in _dockerfile_copies(path):
        assert (ROOT / src).exists(), f"{dockerfile}: COPY {src}: no such path in the repository"
    assert ("deploy/docker/entrypoint.sh", "/usr/local/bin/transplant-entrypoint") in _dockerfile_copies(path)
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert entry == IMAGE_ENTRYPOINT
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the image must not run as root"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(p for p in pins if p.startswith("torch==")).split("==")[1]
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(torch_pin)}$", text, re.M), "torch differs from pyproject"
    assert re.search(r'pip install --index-url "\$\{TORCH_INDEX_URL\}" "torch==\$\{TORCH_VERSION\}"', text)
    assert "pip install --no-deps -e ." in text
    for port in (COORDINATOR_GRPC, COORDINATOR_METRICS, SITE_METRICS, 6379):
        assert re.search(rf"^EXPOSE .*\b{port}\b", text, re.M), f"{dockerfile} does not EXPOSE {port}"
    assert not re.search(r"(?i)(token|password|secret_key)\s*=\s*\S", text), "a secret baked into the image?"


def test_both_images_share_python_and_torch():
    """Ray needs the same Python down to the patch version on every node: one PYTHON_IMAGE for both."""
    cpu = (DEPLOY / "docker" / "Dockerfile").read_text()
    gpu = (DEPLOY / "docker" / "Dockerfile.gpu").read_text()
    arg = re.compile(r"^ARG PYTHON_IMAGE=(\S+)$", re.M)
    assert arg.search(cpu).group(1) == arg.search(gpu).group(1)
    assert arg.search(cpu).group(1).startswith("python:3.11") and "slim" in arg.search(cpu).group(1)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+$", gpu, re.M) and "FROM ${CUDA_IMAGE}" in gpu
    assert "COPY --from=python /usr/local/ /usr/local/" in gpu
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/\$\{TORCH_CUDA\}$", gpu, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu$", cpu, re.M)


def test_compose_builds_and_mounts_existing_files():
    compose = _compose()
    errors = []
    for name, svc in compose["services"].items():
        if build := svc.get("build"):
            context = (DEPLOY / build["context"]).resolve()
            if not (context / build["dockerfile"]).is_file():
                errors.append(f"{name}: build {build} has no Dockerfile")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")) and not (DEPLOY / source).exists():
                errors.append(f"{name}: mount source {source} does not exist")
    assert compose["services"]["ray-worker-gpu"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu"
    assert not errors, "\n".join(errors)


def _run_make_secrets(tmp_path: Path, python: str, *args: str) -> Path:
    out = tmp_path / "secrets"
    r = subprocess.run(["bash", str(MAKE_SECRETS), "--dir", str(out), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHON": python})
    assert r.returncode == 0, f"make-secrets.sh failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return out


def _fake_token_cli(tmp_path: Path) -> str:
    """A stand-in for `python -m coordinator token new` that prints a token (for the file and TLS checks)."""
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho \"new token (shown once):\"\necho \"  tok-$(openssl rand -hex 16)\"\n")
    fake.chmod(0o755)
    return str(fake)


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@needs_openssl
def test_make_secrets_writes_every_compose_secret(tmp_path):
    out = _run_make_secrets(tmp_path, _fake_token_cli(tmp_path))
    for name, spec in _compose()["secrets"].items():
        assert spec["file"].startswith("./secrets/"), f"secret {name} must come from deploy/secrets/"
        assert (out / spec["file"].removeprefix("./secrets/")).is_file(), f"make-secrets.sh does not write {name}"
    secret = (out / "coordinator_token").read_text()
    for site in ("site-a", "site-b"):  # the shell's HMAC is the coordinator's own derivation
        assert (out / f"coordinator_token.{site}.sha256").read_text() == site_credential_sha256(secret, site)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _run_make_secrets(tmp_path, _fake_token_cli(tmp_path))           # a second run keeps everything
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@needs_openssl
@pytest.mark.slow
def test_generated_tls_material_works_for_mutual_tls(tmp_path):
    """Site certificates authenticate to the coordinator's server certificate and back, over real gRPC."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    out = _run_make_secrets(tmp_path, _fake_token_cli(tmp_path))
    ca = (out / "ca.crt").read_bytes()

    def handshake(server_name: str, client_name: str) -> None:
        creds = grpc.ssl_server_credentials([((out / f"{server_name}.key").read_bytes(),
                                              (out / f"{server_name}.crt").read_bytes())],
                                            root_certificates=ca, require_client_auth=True)
        server = grpc.server(ThreadPoolExecutor(1))
        port = server.add_secure_port("localhost:0", creds)
        server.start()
        try:
            channel = grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(
                ca, (out / f"{client_name}.key").read_bytes(), (out / f"{client_name}.crt").read_bytes()))
            grpc.channel_ready_future(channel).result(timeout=15)
            channel.close()
        finally:
            server.stop(0)

    handshake("coordinator", "site-a")
    handshake("coordinator", "admin")
    handshake("site-b", "coordinator")


@needs_openssl
@pytest.mark.slow
def test_make_secrets_with_the_real_token_command(tmp_path):
    """With `python -m coordinator token new`: auth.json holds the sha256 of each token file, nothing else."""
    out = _run_make_secrets(tmp_path, PYTHON)
    auth = json.loads((out / "auth.json").read_text())
    for role, names in (("sites", ("site-a", "site-b")), ("admins", ("admin",))):
        for name in names:
            token = (out / f"{name}.token").read_text()
            assert token and token not in (out / "auth.json").read_text()
            assert auth[role][name]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
            assert auth[role][name]["expires"] > 1e9  # the CLI's default lifetime
    assert auth["sites"]["site-a"]["hosts"] == ["site-a", "site-a.transplant.svc", "site-a.transplant.svc.cluster.local"]
    assert "hosts" not in auth["admins"]["admin"]


@pytest.mark.slow
def test_docker_compose_config(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (`docker compose version` fails)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the secret files compose checks for")
    copy = tmp_path / "repo"
    shutil.copytree(DEPLOY, copy / "deploy", ignore=shutil.ignore_patterns("secrets"))
    for rel in ("pyproject.toml",):
        shutil.copy(ROOT / rel, copy / rel)
    secrets = _run_make_secrets(tmp_path, _fake_token_cli(tmp_path))
    shutil.copytree(secrets, copy / "deploy" / "secrets")
    r = subprocess.run([docker, "compose", "-f", str(copy / "deploy" / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------------------------------
# compose: wiring


def test_compose_file_flags_point_at_mounted_files():
    compose = _compose()
    errors = []
    for name, svc, argv in _compose_invocations():
        secrets = set(svc.get("secrets", []))
        targets = [v.split(":")[1] for v in svc.get("volumes", [])]
        for flag in PATH_FLAGS:
            path = _value(argv, flag)
            if path is None:
                continue
            if path.startswith("/run/secrets/"):
                secret = path.removeprefix("/run/secrets/")
                if secret not in secrets or secret not in compose["secrets"]:
                    errors.append(f"{name}: {flag} {path} is not a secret of this service")
            elif not any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets):
                errors.append(f"{name}: {flag} {path} is not on a volume (lost with the container)")
        for key, value in svc.get("environment", {}).items():
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                if value.removeprefix("/run/secrets/") not in secrets:
                    errors.append(f"{name}: {key}={value} is not a secret of this service")
    assert not errors, "\n".join(errors)


def test_compose_has_no_inline_secrets():
    text = COMPOSE.read_text()
    for pattern in (r"(?i)(password|secret|token)\w*\s*[:=]\s*['\"]?[A-Za-z0-9+/]{12,}", r"BEGIN [A-Z ]*PRIVATE KEY"):
        for m in re.finditer(pattern, text):
            assert "/run/secrets/" in m.group(0) or "_FILE" in m.group(0), f"inline secret? {m.group(0)}"


def test_compose_services_and_ports_agree():
    services = _compose()["services"]
    expected = {"minio", "minio-init", "ray-head", "ray-worker-gpu", "coordinator", "site-a", "site-b",
                "prometheus", "grafana"}
    assert expected <= set(services)
    invocations = {name: _dispatch(argv) for name, _, argv in _compose_invocations()}

    module, coord = invocations["coordinator"]
    assert module == "coordinator"
    assert _value(coord, "--port") == str(COORDINATOR_GRPC) and _value(coord, "--metrics-port") == str(COORDINATOR_METRICS)
    assert _value(coord, "--host") == "0.0.0.0" and _value(coord, "--metrics-host") == "0.0.0.0"
    assert f"{COORDINATOR_GRPC}:{COORDINATOR_GRPC}" in services["coordinator"]["ports"]
    store = _value(coord, "--store")
    assert re.fullmatch(r"s3://[\w.-]+\?endpoint=minio:9000&secure=0", store), store
    assert _value(coord, "--ray-address") == "ray-head:6379"
    assert invocations["ray-head"][0] == "ray" and "--port=6379" in invocations["ray-head"][1]
    module, worker = invocations["ray-worker-gpu"]
    assert module == "ray" and "--address=ray-head:6379" in worker and "--num-gpus=1" in worker
    devices = services["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    bucket = re.match(r"s3://([\w.-]+)", store).group(1)
    assert services["minio-init"]["environment"]["BUCKET"] == bucket
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["coordinator"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"

    sites = [n for n, (m, argv) in invocations.items() if m == "site_agent"]
    assert sorted(sites) == ["site-a", "site-b"]
    for name in sites:
        argv = invocations[name][1]
        assert _value(argv, "--coordinator") == f"coordinator:{COORDINATOR_GRPC}"
        assert _value(argv, "--advertise") == f"{name}:{_value(argv, '--port')}", f"{name} must advertise itself"
        assert _value(argv, "--metrics-port") == str(SITE_METRICS)
        assert _value(argv, "--host") == "0.0.0.0"
        assert _value(argv, "--site-id") == name
        volumes = services[name]["volumes"]
        assert any(v.startswith(f"{name}-data:") for v in volumes), f"{name} has no data volume of its own"
    data = {v.split(":")[0] for n in sites for v in services[n]["volumes"]}
    assert len(data) == 2 * len(sites), "sites must not share volumes"

    admin = services["admin"]
    module, argv = _dispatch(admin["entrypoint"][len(IMAGE_ENTRYPOINT):] + admin["command"])
    assert module == "coordinator.admin" and _value(argv, "--coordinator") == f"coordinator:{COORDINATOR_GRPC}"


def test_prometheus_scrapes_what_compose_runs():
    prom = _docs(DEPLOY / "prometheus" / "prometheus.yml")[0]
    services = _compose()["services"]
    invocations = {name: _dispatch(argv) for name, _, argv in _compose_invocations()}
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in prom["scrape_configs"]}
    assert set(jobs) >= {"coordinator", "sites"}, "alerts.yml refers to the jobs `coordinator` and `sites`"
    for job, targets in jobs.items():
        for target in targets:
            host, port = target.rsplit(":", 1)
            assert host in services, f"scrape target {target}: no compose service {host}"
            module, argv = invocations[host]
            assert _value(argv, "--metrics-port") == port, f"{target}: {host} serves metrics elsewhere"
    site_services = sorted(n for n, (m, _) in invocations.items() if m == "site_agent")
    assert sorted(t.split(":")[0] for t in jobs["sites"]) == site_services
    assert jobs["coordinator"] == [f"coordinator:{COORDINATOR_METRICS}"]

    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config = next(a.split("=", 1)[1] for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    assert mounts.get("./prometheus/prometheus.yml") == config
    for rule_file in prom["rule_files"]:
        target = str(Path(config).parent / rule_file)
        source = next((s for s, t in mounts.items() if t == target), None)
        assert source and (DEPLOY / source).is_file(), f"rule file {rule_file} is not mounted at {target}"


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_flags_exist():
    r = subprocess.run(["prometheus", "--help"], capture_output=True, text=True, timeout=60)
    known = set(re.findall(r"(--[a-z][\w.-]*)", r.stdout + r.stderr))
    used = {a.split("=")[0] for a in _compose()["services"]["prometheus"]["command"]}
    assert used <= known, f"unknown Prometheus flags: {sorted(used - known)}"


def test_grafana_provisioning_is_mounted():
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning"
    provider = _docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "transplant.yml")[0]["providers"][0]
    dash_dir = provider["options"]["path"]
    source = next((s for s, t in mounts.items() if t == dash_dir), None)
    assert source and list((DEPLOY / source).glob("*.json")), f"no dashboards mounted at {dash_dir}"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_dir + "/") and (DEPLOY / source / Path(home).name).is_file()
    datasource = _docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in _compose()["services"]
    assert any(p.endswith(":9090") for p in _compose()["services"]["prometheus"]["ports"])
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"


# ----------------------------------------------------------------------------------------------------
# Kubernetes


try:
    import kubernetes_validate  # noqa: F401
    HAVE_VALIDATOR = True
except ImportError:
    HAVE_VALIDATOR = False


def _latest_k8s() -> str:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)")
    from kubernetes_validate.utils import latest_version

    return latest_version()


def _validate(doc: dict, where: str) -> str | None:
    import kubernetes_validate as kv

    try:
        kv.validate(doc, _latest_k8s(), strict=True)
    except kv.SchemaNotFoundError:
        return "no-schema"
    except kv.ValidationError as exc:
        return f"{where}: {exc.message} at {'/'.join(map(str, exc.path))}"
    return None


def test_k8s_builtin_kinds_pass_schema_validation():
    errors, unchecked = [], set()
    for path, doc in _k8s_docs():
        result = _validate(doc, f"{path.name} {doc['kind']}/{doc['metadata']['name']}")
        if result == "no-schema":
            unchecked.add(doc["kind"])
        elif result:
            errors.append(result)
    assert not errors, "\n".join(errors)
    assert unchecked == {"RayCluster"}, f"kinds without a schema (need structural checks): {unchecked}"


def test_k8s_validator_catches_mistakes():
    """The validator is live: a misspelt field and a wrong type are rejected."""
    _latest_k8s()
    deployment = next(d for _, d in _k8s_docs() if d["kind"] == "Deployment")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert _validate(bad, "bad") not in (None, "no-schema")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["replicas"] = "one"
    assert _validate(bad, "bad") not in (None, "no-schema")


def test_raycluster_structure():
    rays = [d for _, d in _k8s_docs() if d["kind"] == "RayCluster"]
    assert len(rays) == 1
    ray = rays[0]
    assert ray["apiVersion"] == "ray.io/v1"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    assert ray["spec"]["rayVersion"] == ray_pin
    head = ray["spec"]["headGroupSpec"]
    groups = ray["spec"]["workerGroupSpecs"]
    for where, group in [("head", head), *((g["groupName"], g) for g in groups)]:
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), \
            f"{where}: rayStartParams values must be strings"
        containers = group["template"]["spec"]["containers"]
        assert _is_project_image(containers[0]["image"]), f"{where}: the Ray container must run the project image"
        # KubeRay-embedded pod templates are core PodSpecs: validate them as Pods (when the validator is here).
        if HAVE_VALIDATOR:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"ray-{where}"},
                   "spec": group["template"]["spec"]}
            assert (err := _validate(pod, f"RayCluster {where} pod template")) is None, err
    assert _image_name(head["template"]["spec"]["containers"][0]["image"]) == CPU_IMAGE
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"
    gpu_groups = []
    for group in groups:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if gpus:
            gpu_groups.append(group)
            assert _image_name(container["image"]) == GPU_IMAGE, "GPU workers run the CUDA image"
            assert group["rayStartParams"].get("num-gpus") == str(gpus)
            assert any(t.get("key") == "nvidia.com/gpu" for t in group["template"]["spec"].get("tolerations", []))
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    address = _configmap_data()["CFG_RAY_ADDRESS"]
    assert address == f"{ray['metadata']['name']}-head-svc:6379", "KubeRay's head Service is <name>-head-svc"


def test_kustomization_structure():
    kust = _docs(K8S / "kustomization.yaml")[0]
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    resources = kust["resources"]
    for res in resources:
        assert (K8S / res).is_file(), f"kustomization resource {res} does not exist"
    assert not set(resources) & EXAMPLES, "example manifests (placeholders) must not be applied by default"
    assert {"namespace.yaml", "configmap.yaml", "coordinator.yaml", "raycluster.yaml"} <= set(resources)
    namespaces = [d["metadata"]["name"] for _, d in _k8s_docs() if d["kind"] == "Namespace"]
    assert kust["namespace"] in namespaces
    used = {_image_name(c["image"]) for _, d in _k8s_docs() for _, c, _ in _containers(d) if _is_project_image(c["image"])}
    assert used <= {i["name"] for i in kust["images"]}
    not_applied = {p.name for p in K8S.glob("*.yaml")} - set(resources) - {"kustomization.yaml"}
    assert not_applied == EXAMPLES, f"manifests neither applied nor examples: {not_applied - EXAMPLES}"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_validates():
    r = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    errors = []
    for doc in docs:
        assert doc["metadata"].get("namespace", "transplant") == "transplant" or doc["kind"] == "Namespace"
        result = _validate(doc, f"built {doc['kind']}/{doc['metadata']['name']}")
        if result not in (None, "no-schema"):
            errors.append(result)
    assert not errors, "\n".join(errors)
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "Deployment", "Service", "RayCluster",
                                         "PersistentVolumeClaim"}


def _k8s_by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in _k8s_docs() if d["kind"] == kind}


def test_k8s_references_resolve():
    """Secrets, keys, ConfigMap keys, claims and $(VAR)s that pods use are all defined."""
    secrets = {n: set(d.get("stringData", {})) | set(d.get("data", {})) for n, d in _k8s_by_kind("Secret").items()}
    claims = set(_k8s_by_kind("PersistentVolumeClaim"))
    config = _configmap_data()
    errors = []
    for _, doc in _k8s_docs():
        for label, c, spec in _containers(doc):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if s := ref.get("secretKeyRef"):
                    if s["key"] not in secrets.get(s["name"], set()):
                        errors.append(f"{label}: env {env['name']}: no key {s['key']} in Secret {s['name']}")
                if m := ref.get("configMapKeyRef"):
                    if m["key"] not in config:
                        errors.append(f"{label}: env {env['name']}: no key {m['key']} in the ConfigMap")
            defined = {e["name"] for e in c.get("env", [])}
            for var in re.findall(r"\$\((\w+)\)", json.dumps(c.get("args", []))):
                if var not in defined:
                    errors.append(f"{label}: $({var}) is not an env var of the container (left unexpanded)")
            for volume in spec.get("volumes", []):
                if s := volume.get("secret"):
                    keys = secrets.get(s["secretName"])
                    if keys is None:
                        errors.append(f"{label}: volume {volume['name']}: no Secret {s['secretName']}")
                    for item in s.get("items", []):
                        if keys is not None and item["key"] not in keys:
                            errors.append(f"{label}: Secret {s['secretName']} has no key {item['key']}")
                if p := volume.get("persistentVolumeClaim"):
                    if p["claimName"] not in claims:
                        errors.append(f"{label}: no PersistentVolumeClaim {p['claimName']}")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            errors += [f"{label}: mounts undefined volume {m}" for m in mounts - {v["name"] for v in spec.get("volumes", [])}]
    assert not errors, "\n".join(errors)


def test_k8s_secrets_example_holds_only_placeholders():
    for name, doc in _k8s_by_kind("Secret").items():
        assert "data" not in doc, f"Secret {name}: use stringData placeholders in the example"
        for key, value in doc["stringData"].items():
            assert "REPLACE_ME" in value, f"Secret {name} key {key} is not a placeholder"
    assert all(p.name == "secrets.example.yaml" for p, d in _k8s_docs() if d["kind"] == "Secret")


def test_k8s_file_flags_point_at_mounts():
    errors = []
    for label, c, spec, argv in _k8s_invocations():
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        for flag in PATH_FLAGS:
            path = _value(argv, flag)
            if path is not None and not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                errors.append(f"{label}: {flag} {path} is not on a mounted volume")
        for volume in spec.get("volumes", []):
            items = volume.get("secret", {}).get("items")
            if items:  # a file flag naming a projected secret file must name one of its items
                mount = next((m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volume["name"]), None)
                for flag in PATH_FLAGS:
                    path = _value(argv, flag)
                    if mount and path and path.startswith(mount + "/") and \
                            path.removeprefix(mount + "/") not in {i["path"] for i in items}:
                        errors.append(f"{label}: {flag} {path}: the Secret volume projects no such file")
    assert not errors, "\n".join(errors)


def test_k8s_ports_probes_and_services():
    deployments, services = _k8s_by_kind("Deployment"), _k8s_by_kind("Service")
    invocations = {label.split()[0]: (c, _dispatch(argv)) for label, c, _, argv in _k8s_invocations()}

    container, (module, argv) = invocations["Deployment/coordinator"]
    assert module == "coordinator" and "serve" in argv
    assert _value(argv, "--port") == str(COORDINATOR_GRPC) and _value(argv, "--metrics-port") == str(COORDINATOR_METRICS)
    assert _value(argv, "--host") == "0.0.0.0" and _value(argv, "--metrics-host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": COORDINATOR_GRPC, "metrics": COORDINATOR_METRICS}
    assert container["readinessProbe"]["tcpSocket"]["port"] in ("grpc", COORDINATOR_GRPC)
    coordinator = deployments["coordinator"]
    assert coordinator["spec"]["replicas"] == 1 and coordinator["spec"]["strategy"]["type"] == "Recreate"
    assert _value(argv, "--state-dir").startswith(next(m["mountPath"] for m in container["volumeMounts"]
                                                      if m["name"] == "state"))
    annotations = coordinator["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(COORDINATOR_METRICS)
    store = _value(argv, "--store")
    assert re.fullmatch(r"s3://[\w.-]+\?endpoint=[\w.-]+:\d+&secure=[01]", store), store
    minio = services.get("minio")
    host, port = re.search(r"endpoint=([\w.-]+):(\d+)", store).groups()
    assert minio and host == "minio" and int(port) in {p["port"] for p in minio["spec"]["ports"]}

    for name, service in services.items():
        target = next((d for d in deployments.values()
                       if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()),
                      None)
        assert target, f"Service {name} selects no Deployment"
        pod_ports = {p["name"]: p["containerPort"] for c in target["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in pod_ports and pod_ports[p["targetPort"]] == p["port"], f"Service {name} {p}"
    assert {p["port"] for p in services["coordinator"]["spec"]["ports"]} == {COORDINATOR_GRPC, COORDINATOR_METRICS}

    site_container, (module, site) = invocations["Deployment/site-example"]
    assert module == "site_agent" and "run" in site
    assert _value(site, "--metrics-port") == str(SITE_METRICS)
    assert _value(site, "--coordinator") == f"coordinator:{COORDINATOR_GRPC}"
    host, port = _value(site, "--advertise").split(":")
    assert host in services and port == _value(site, "--port")
    assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
