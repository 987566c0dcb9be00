"""
The import layering of appnpy (docs/architecture.md; the refactor contract's
rule 1), checked by parsing every module with C{ast}: nothing is imported, so
a module that fails to import, or imports lazily, is still checked.

Base modules (C{appnpy}, C{appnpy.errors}, C{appnpy.interfaces}) may be
imported from anywhere and import no other appnpy module.  The layers,
bottom-up: link < cp < session < net < ops < top (C{appnpy.api},
C{appnpy.node}, C{appnpy.tap}, C{appnpy.testing} and any other top-level
module).  A module imports only its own layer, lower layers and base; imports
inside functions count (a lazy import is still a dependency), and so do
C{if TYPE_CHECKING:} imports (a lower layer must not even name a higher
layer's types).  There is no import cycle between modules (type-checking-only
imports excepted, as they never run).  The framework never imports a plugin
distribution (C{appnpy_*}, or anything under C{plugins/}).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "appnpy"

BASE = frozenset({"appnpy", "appnpy.errors", "appnpy.interfaces"})
LAYERS = ("link", "cp", "session", "net", "ops", "top")
TOP = LAYERS.index("top")


@attrs.frozen
class ModuleSource:
    """
    One module to check: its dotted name, the path reports name, its source.
    """

    name: str
    path: str
    source: str
    isPackage: bool = False


@attrs.frozen
class Import:
    """
    One appnpy (or plugin) module a module imports, and where.
    """

    importer: str
    target: str
    path: str
    line: int
    typeCheckingOnly: bool


def layerOf(module: str) -> int:
    """
    The layer index of an appnpy module; -1 for a base module.
    """
    if module in BASE:
        return -1
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS[:TOP]:
        return LAYERS.index(parts[1])
    return TOP


def layerName(module: str) -> str:
    index = layerOf(module)
    return "base" if index < 0 else LAYERS[index]


def isPlugin(module: str) -> bool:
    top = module.split(".")[0]
    return top.startswith("appnpy_") or top == "plugins"


def _isTypeChecking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def _resolve(module: ModuleSource, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.isPackage:
        package = package[:-1]
    if node.level > 1:
        package = package[: -(node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def importsOf(module: ModuleSource, known: Iterable[str]) -> list[Import]:
    """
    Every import of an appnpy or plugin module in C{module}, at any depth,
    each named by the most specific module it reaches: C{from appnpy.cp
    import controlpoint} imports C{appnpy.cp.controlpoint} when that is a
    module, else C{appnpy.cp}.
    """
    knownModules = set(known)
    tree = ast.parse(module.source, module.path)
    found: list[Import] = []

    def add(target: str, line: int, typeChecking: bool) -> None:
        if target.split(".")[0] == "appnpy" or isPlugin(target):
            found.append(Import(module.name, target, module.path, line, typeChecking))

    def visit(node: ast.AST, typeChecking: bool) -> None:
        if isinstance(node, ast.If) and _isTypeChecking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typeChecking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, typeChecking)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in knownModules else base, node.lineno, typeChecking)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node.lineno, typeChecking)
        for child in ast.iter_child_nodes(node):
            visit(child, typeChecking)

    visit(tree, False)
    return found


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected components with more than one module (or a
    module importing itself), by Tarjan's algorithm.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    result: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        onStack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return result


def violations(modules: Iterable[ModuleSource]) -> list[str]:
    """
    Every layering, plugin and cycle violation among C{modules}, one line
    each, starting with C{path:line}.
    """
    modules = list(modules)
    names = {m.name for m in modules}
    problems: list[str] = []
    edges: dict[str, set[str]] = {m.name: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for module in modules:
        for imp in importsOf(module, names):
            at = f"{imp.path}:{imp.line}"
            if isPlugin(imp.target):
                problems.append(f"{at}: {imp.importer} imports the plugin {imp.target}")
                continue
            if imp.target == imp.importer:
                continue
            low, high = layerOf(imp.importer), layerOf(imp.target)
            if high > low or (low < 0 and high >= 0):
                problems.append(
                    f"{at}: {imp.importer} ({layerName(imp.importer)}) imports "
                    f"{imp.target} ({layerName(imp.target)}), a higher layer"
                )
            if not imp.typeCheckingOnly and imp.target in names:
                edges[imp.importer].add(imp.target)
                where.setdefault((imp.importer, imp.target), at)
    for component in _cycles(edges):
        members = set(component)
        links = [
            f"{where[(a, b)]} ({a} -> {b})" for a in component for b in sorted(edges[a] & members)
        ]
        problems.append(f"import cycle {' <-> '.join(component)}: " + "; ".join(links))
    # One line per import statement and target (C{from m import a, b} is one).
    return list(dict.fromkeys(problems))


def treeModules(package: Path = PACKAGE) -> list[ModuleSource]:
    """
    Every module of the appnpy package on disk.
    """
    result = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        parts = list(relative.with_suffix("").parts)
        isPackage = parts[-1] == "__init__"
        if isPackage:
            parts = parts[:-1]
        result.append(
            ModuleSource(".".join(parts), str(relative), path.read_text(), isPackage=isPackage)
        )
    return result


class CheckerTests(SynchronousTestCase):
    """
    The checker itself, on made-up module sources.
    """

    def check(self, sources: dict[str, str]) -> list[str]:
        return violations(
            ModuleSource(
                name,
                name.replace(".", "/") + ".py",
                source,
                isPackage=name == "appnpy",
            )
            for name, source in sources.items()
        )

    def test_clean(self) -> None:
        """
        Imports downward, within a layer and of base modules pass.
        """
        self.assertEqual(
            self.check(
                {
                    "appnpy.errors": "import enum\n",
                    "appnpy.link.tls": "from appnpy.errors import Reason\n",
                    "appnpy.cp.controlpoint": (
                        "from appnpy.link.tls import X\nfrom appnpy import errors\n"
                    ),
                    "appnpy.cp.messages": "from appnpy.cp import controlpoint\n",
                    "appnpy.node": "import appnpy.cp.controlpoint\nimport appnpyish\n",
                }
            ),
            [],
        )

    def test_upward(self) -> None:
        """
        An import of a higher layer is reported with its file and line, also
        inside a function and under C{if TYPE_CHECKING:}.
        """
        problems = self.check(
            {
                "appnpy.link.tls": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from appnpy.session.adjacent import Session\n"
                ),
                "appnpy.cp.controlpoint": "def f():\n    from appnpy.ops import probe\n",
                "appnpy.ops.config": "from appnpy.node import Node\n",
                "appnpy.session.adjacent": "",
                "appnpy.ops.probe": "",
                "appnpy.node": "",
            }
        )
        self.assertEqual(
            sorted(problems),
            [
                "appnpy/cp/controlpoint.py:2: appnpy.cp.controlpoint (cp) imports "
                "appnpy.ops.probe (ops), a higher layer",
                "appnpy/link/tls.py:3: appnpy.link.tls (link) imports "
                "appnpy.session.adjacent (session), a higher layer",
                "appnpy/ops/config.py:1: appnpy.ops.config (ops) imports "
                "appnpy.node (top), a higher layer",
            ],
        )

    def test_baseImportsNoLayer(self) -> None:
        """
        A base module importing a layer is reported: base modules must be
        importable from anywhere.
        """
        problems = self.check(
            {"appnpy.errors": "from appnpy.link import tls\n", "appnpy.link.tls": ""}
        )
        self.assertEqual(len(problems), 1)
        self.assertIn("appnpy/errors.py:1: appnpy.errors (base)", problems[0])

    def test_plugin(self) -> None:
        """
        Importing a plugin distribution is reported, lazily or not.
        """
        problems = self.check(
            {
                "appnpy.testing": "def f():\n    from appnpy_echo import Echo\n",
                "appnpy.ops.probe": "import appnpy_ping.thing\n",
                "appnpy.tap": "import plugins.echo\n",
            }
        )
        self.assertEqual(
            sorted(problems),
            [
                "appnpy/ops/probe.py:1: appnpy.ops.probe imports the plugin appnpy_ping.thing",
                "appnpy/tap.py:1: appnpy.tap imports the plugin plugins.echo",
                "appnpy/testing.py:2: appnpy.testing imports the plugin appnpy_echo",
            ],
        )

    def test_cycle(self) -> None:
        """
        A cycle inside one layer is reported with every import in it; a
        type-checking-only import does not make one.
        """
        problems = self.check(
            {
                "appnpy.net.relay": "from appnpy.net import routing\n",
                "appnpy.net.routing": "x = 1\ndef f():\n    import appnpy.net.relay\n",
                "appnpy.net.peers": "from appnpy.net.topology import T\n",
                "appnpy.net.topology": (
                    "import typing\nif typing.TYPE_CHECKING:\n    from appnpy.net.peers import P\n"
                ),
            }
        )
        self.assertEqual(
            problems,
            [
                "import cycle appnpy.net.relay <-> appnpy.net.routing: "
                "appnpy/net/relay.py:1 (appnpy.net.relay -> appnpy.net.routing); "
                "appnpy/net/routing.py:3 (appnpy.net.routing -> appnpy.net.relay)"
            ],
        )

    def test_relative(self) -> None:
        """
        Relative imports are resolved before they are checked.
        """
        problems = self.check(
            {
                "appnpy.link.tls": "from ..cp import controlpoint\nfrom . import yamux\n",
                "appnpy.link.yamux": "",
                "appnpy.cp.controlpoint": "",
            }
        )
        self.assertEqual(
            problems,
            [
                "appnpy/link/tls.py:1: appnpy.link.tls (link) imports "
                "appnpy.cp.controlpoint (cp), a higher layer"
            ],
        )


class TreeTests(SynchronousTestCase):
    """
    The appnpy package as it is.
    """

    def test_modulesFound(self) -> None:
        """
        The checker sees the whole package, every layer included.
        """
        names = {m.name for m in treeModules()}
        self.assertTrue(BASE <= names, BASE - names)
        self.assertEqual({layerName(n) for n in names}, {"base", *LAYERS}, sorted(names))

    def test_layering(self) -> None:
        """
        No module imports a higher layer or a plugin, and there is no import
        cycle.
        """
        problems = violations(treeModules())
        if problems:
            self.fail(f"{len(problems)} layering violations:\n" + "\n".join(problems))


#: What a plugin distribution may import of the framework: the stable surface.
PLUGIN_SURFACE = "appnpy.api"


def pluginViolations(root: Path = ROOT / "plugins") -> list[str]:
    """
    Every import of an C{appnpy} module other than L{PLUGIN_SURFACE} in the
    plugin distributions under C{root}, as C{path:line: what}.
    """
    problems = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module == "appnpy":
                    names = [f"appnpy.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if (name == "appnpy" or name.startswith("appnpy.")) and name != PLUGIN_SURFACE:
                    problems.append(
                        f"{path.relative_to(root)}:{node.lineno}: imports {name}, "
                        f"not only {PLUGIN_SURFACE}"
                    )
    return problems


class PluginSurfaceTests(SynchronousTestCase):
    """
    Plugins are written as a third party's would be: against appnpy.api only.
    """

    def test_checkerCatches(self) -> None:
        """
        The checker reports a plugin module that imports the framework
        behind appnpy.api, in either import form.
        """
        root = Path(self.mktemp())
        (root / "p").mkdir(parents=True)
        (root / "p" / "ok.py").write_text("from appnpy.api import ISessionPlugin\n")
        (root / "p" / "bad.py").write_text(
            "import appnpy.node\nfrom appnpy.cp import messages\nfrom appnpy import errors\n"
        )
        problems = pluginViolations(root)
        self.assertEqual(len(problems), 3, problems)
        self.assertTrue(all("bad.py" in p for p in problems), problems)

    def test_pluginsUseOnlyTheAPI(self) -> None:
        """
        Every shipped plugin imports nothing of appnpy but appnpy.api.
        """
        self.assertTrue(list((ROOT / "plugins").rglob("*.py")))
        self.assertEqual(pluginViolations(), [])
