"""The house's plan: one import name, imports that only go downward, no cycles.

rooms <- media <- recording <- signaling: a package imports only those to its left (and
itself). Read from the source with `ast`, so a function-level or TYPE_CHECKING import counts
as much as a top-level one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support import ROOT, SECRET, free_port, wait_until

LAYERS = ("rooms", "media", "recording", "signaling")
GENERIC = {*LAYERS, "tests", "benchmarks"}  # never imported by the installed packages


def _modules() -> dict[str, Path]:
    """orbridge.<layer>.<...> -> source file, for every module of the four packages."""
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(("orbridge", *parts))] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((name, node.lineno, id(node) in top_level))
            # `from orbridge.media import tap` imports the module orbridge.media.tap
            out += [(f"{name}.{a.name}", node.lineno, id(node) in top_level) for a in node.names]
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "orbridge" else None


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    problems = []
    for module, path in modules.items():
        where = path.relative_to(ROOT)
        for name, line, _ in _imports(module, path):
            if name.split(".")[0] in GENERIC:
                problems.append(f"{where}:{line} imports {name} (use the orbridge. name)")
            target = name if name in modules else None
            if target is None:
                continue
            edges[module].add(target)
            src, dst = LAYERS.index(_layer(module) or ""), LAYERS.index(_layer(target) or "")
            if dst > src:
                problems.append(f"{where}:{line} imports {target}: upward ({LAYERS[src]} -> "
                                f"{LAYERS[dst]})")  # fmt: skip
    return edges, problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def _package_of(module: str, modules: dict[str, Path]) -> str:
    """The (sub)package a module belongs to: itself for a package, else its parent."""
    return module if modules[module].name == "__init__.py" else module.rpartition(".")[0]


def test_imports_only_go_downward() -> None:
    _, problems = _graph()
    assert problems == []


def test_no_import_cycles_between_packages_or_modules() -> None:
    edges, _ = _graph()
    modules = _modules()
    packages: dict[str, set[str]] = defaultdict(set)
    for src, targets in edges.items():
        for dst in targets:
            a, b = _package_of(src, modules), _package_of(dst, modules)
            # a subpackage using its parent's modules is the normal direction, not a cycle
            if a != b and not a.startswith(b + "."):
                packages[a].add(b)
    assert _cycles(packages) == []
    assert _cycles(edges) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The graph helpers on a made-up cycle and an upward edge (so the tests above can fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = tmp_path / "mod.py"
    source.write_text("from orbridge.signaling.app import x\ndef f():\n    import media.tap\n")
    found = _imports("orbridge.rooms.mod", source)
    assert ("orbridge.signaling.app", 1, True) in found
    assert ("media.tap", 3, False) in found


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with orbridge's wheel installed and nothing else of the repository.

    The wheel is built from a copy of the files git would commit with this venv's setuptools (no
    network). The fresh venv reaches the dependencies through a .pth line to this venv's
    site-packages, whose own .pth files (the editable install) are not processed there.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(source)],
        check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("orbridge-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=240)  # fmt: skip
    return venv


def test_the_wheel_installs_only_the_orbridge_name(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    installed = {p.name for p in site.iterdir()} - {"deps.pth", "__pycache__", "_distutils_hack"}
    assert {n for n in installed if not n.endswith(".dist-info")} == {"orbridge"}
    probe = (
        "import importlib.util, orbridge.media, orbridge.signaling.app\n"
        "print(orbridge.media.__file__)\n"
        "print([n for n in ('media', 'rooms', 'recording', 'signaling')"
        " if importlib.util.find_spec(n)])\n"
    )  # fmt: skip
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                         text=True, timeout=120).stdout.splitlines()  # fmt: skip
    assert out[0].startswith(str(site / "orbridge" / "media"))
    assert out[1] == "[]"


def test_the_installed_command_serves_pages_and_static_files(
    wheel_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    command = wheel_venv / "bin" / "orbridge"
    env = {**os.environ, "ORBRIDGE_SECRET": SECRET, "ORBRIDGE_DATA_DIR": str(tmp_path)}
    token = subprocess.run([command, "token", "--room", "or-1", "--role", "expert", "--name",
                            "Dr Wang", "--json"], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert '"token"' in token
    server = subprocess.Popen([command, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(base + path, timeout=2) as response:
            return response.status, response.read()

    def up() -> bool:
        try:
            return get("/healthz")[0] == 200
        except OSError:
            return False

    try:
        assert wait_until(up, 30)
        status, page = get("/room/or-1")
        assert status == 200 and b"/static/js/" in page
        status, script = get("/static/js/protocol.js")
        assert status == 200 and b"export" in script
        status, _ = get("/static/vendor/socket.io-client/socket.io.esm.min.js")
        assert status == 200
    finally:
        server.terminate()
        server.wait(20)
