"""The image (Dockerfile), checked statically: this machine has no Docker daemon and no
registry access, so `docker build` cannot run in the suite. The test reads the Dockerfile's
instructions as Docker does (continuation lines joined, comments dropped, stages split at
FROM) and checks what issue 12 asks of it: a pinned base, a build stage that installs exactly
constraints.txt and a checksum-verified current kubectl, a final stage with no build tools
that runs as a numeric non-root user with a HEALTHCHECK the probe module accepts. It also
checks that constraints.txt is what the test venv holds (.ci/constraints --check) and that
.ci/bootstrap installs the venv with it."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import yaml

from bot import probes

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SHA256 = re.compile(r"[0-9a-f]{64}")
# Packages that compile or fetch: none may reach the final stage.
BUILD_TOOLS = {"build-essential", "gcc", "g++", "make", "curl", "wget", "python3-dev",
               "libffi-dev", "libssl-dev", "pkg-config"}
OLDEST_KUBECTL = (1, 30)  # kustomize `labels` and `components` need a current kubectl


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not logical):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        found.append((keyword.upper(), rest.strip()))
        logical = ""
    return found


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 else None))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def stage_args(stage: Stage) -> dict[str, str]:
    return dict(rest.partition("=")[::2] for rest in stage.all("ARG"))


def apt_packages(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


ARGS, STAGES = parse((ROOT / "Dockerfile").read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]


def test_the_parser_reads_continuations_comments_and_stages():
    args, stages = parse("ARG B=img:1@sha256:" + "a" * 64 + "\n# c\nFROM ${B} AS one\n"
                         "RUN a \\\n  && b\n\nFROM ${B}\nUSER 5\n")
    assert args == {"B": f"img:1@sha256:{'a' * 64}"}
    assert [(s.base, s.name) for s in stages] == [(f"img:1@sha256:{'a' * 64}", "one"),
                                                   (f"img:1@sha256:{'a' * 64}", None)]
    assert stages[0].all("RUN") == ["a  && b"] and stages[1].all("USER") == ["5"]


def test_two_stages_on_a_base_pinned_by_version_and_digest():
    assert len(STAGES) >= 2 and BUILD.name == "build"
    for stage in STAGES:
        image = stage.base.partition("@")[0]
        assert DIGEST.search(stage.base), f"{stage.base}: pin the base by its digest"
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: a full version, not a floating tag"
    # The suite's Python and the image's are the same minor version.
    assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")


def test_the_build_stage_installs_exactly_the_constraints_then_the_package_alone():
    runs = " ".join(BUILD.all("RUN"))
    assert any(copy.split()[0] == "constraints.txt" for copy in BUILD.all("COPY"))
    assert "pip install -r constraints.txt" in runs
    assert "pip install --no-deps ." in runs and "pip check" in runs
    assert runs.index("install -r constraints.txt") < runs.index("install --no-deps .")


def test_kubectl_is_current_and_checked_against_pinned_checksums():
    args = stage_args(BUILD)
    version = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", args["KUBECTL_VERSION"])
    assert version and tuple(map(int, version.groups()[:2])) >= OLDEST_KUBECTL
    for arch in ("AMD64", "ARM64"):
        assert SHA256.fullmatch(args[f"KUBECTL_SHA256_{arch}"]), arch
    (download,) = [run for run in BUILD.all("RUN") if "dl.k8s.io" in run]
    assert "sha256sum -c" in download
    assert download.index("curl") < download.index("sha256sum -c") < download.index("chmod")
    assert "${KUBECTL_SHA256_AMD64}" in download and "${KUBECTL_SHA256_ARM64}" in download


def test_the_final_stage_has_no_build_tools_and_copies_only_the_results():
    assert apt_packages(FINAL) <= {"git", "ca-certificates"}
    assert not apt_packages(FINAL) & BUILD_TOOLS
    assert "curl" in apt_packages(BUILD)  # the download happens where it belongs
    copied = sorted(c for c in FINAL.all("COPY") if c.startswith("--from="))
    assert copied == ["--from=build /opt/venv /opt/venv",
                      "--from=build /usr/local/bin/kubectl /usr/local/bin/kubectl"]
    assert not any("pip install" in run for run in FINAL.all("RUN"))
    assert any("PATH=/opt/venv/bin:$PATH" in env for env in FINAL.all("ENV"))


def test_the_final_stage_runs_as_the_numeric_user_deploy_expects():
    (user,) = FINAL.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only check a numeric user"
    deployment = yaml.safe_load((ROOT / "deploy" / "base" / "web.yaml").read_text().split(
        "\n---\n")[0])
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (context["runAsUser"], context["runAsGroup"])
    assert any(f"--uid {uid}" in run for run in FINAL.all("RUN"))
    keywords = [kw for kw, _ in FINAL.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_the_healthcheck_runs_the_probe_module_in_auto_mode():
    (check,) = FINAL.all("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    argv = json.loads(command)
    assert argv[:3] == ["python", "-m", "bot.probes"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    probes.add_arguments(parser)
    assert parser.parse_args(argv[3:]).role == "auto"
    (cmd,) = FINAL.all("CMD")
    assert json.loads(cmd) == ["coalmine", "serve"]


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if not copy.startswith("--from="):
                for source in copy.split()[:-1]:
                    assert source.rstrip("/") in allowed, source


def test_constraints_are_what_the_test_venv_holds():
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "constraints"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.+!-]+", pin) for pin in pins), pins
    names = {pin.partition("==")[0] for pin in pins}
    assert {"flask", "gunicorn", "rq", "redis", "kubernetes", "scipy"} <= names
    assert not {"pytest", "hypothesis", "ruff", "jsonschema"} & names  # runtime only


def test_bootstrap_installs_the_test_venv_with_the_constraints():
    bootstrap = (ROOT / ".ci" / "bootstrap").read_text()
    (install,) = [line for line in bootstrap.splitlines() if "pip install -q -e" in line]
    assert "-c constraints.txt" in install
    assert "[ constraints.txt -nt \"$stamp\" ]" in bootstrap  # a refresh reinstalls


def test_the_license_file_is_the_license_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_data_file_of_the_packages_is_installed_with_them():
    """The suite runs an editable install, which reads data files from the source tree; the
    image installs the package (`pip install --no-deps .`), which carries only what
    `[tool.setuptools.package-data]` names. A template, CRD or the OpenAPI subset left out
    would fail only in the image (the dashboard, `coalmine demo`), so every non-Python file
    under the packages must match a pattern of its package."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    missing = []
    for path in sorted((ROOT / "bot").rglob("*")) + sorted((ROOT / "handlers").rglob("*")):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(ROOT)
        owners = [(pkg, rel.relative_to(Path(*pkg.split(".")))) for pkg in data
                  if rel.is_relative_to(Path(*pkg.split(".")))]
        if not any(fnmatch(str(inner), pattern) for pkg, inner in owners
                   for pattern in data[pkg]):
            missing.append(str(rel))
    assert missing == [], f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
