"""
The floors of L{kezchat.layers} hold: every import of every kezchat module
goes to its own floor or to one its floor may import from, and the domain
imports nothing of the HTTP server.

Run it alone to see the layering: C{python -m twisted.trial tests.test_layers}.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from kezchat import layers

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kezchat"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


def imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """
    Every module C{name} imports (absolute dotted names, relative imports
    resolved), with its line; C{from a import b} yields C{a.b} when C{a.b}
    is a module of the tree, else C{a}. Imports inside functions count:
    a lazy import is still a dependency.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    seen = set()
    for line, target in _imports(package, tree):
        if (line, target) not in seen:
            seen.add((line, target))
            yield line, target


def _imports(package: str, tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if is_module(sub) else target


def is_module(dotted: str) -> bool:
    if not dotted.startswith("kezchat"):
        return False
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def upward_imports() -> list[str]:
    """
    Every import that breaks the table, as C{file:line importer (floor) ->
    imported (floor)}.
    """
    found = []
    for name, path in modules():
        for line, target in imports(name, path):
            if target.split(".")[0] != "kezchat" or layers.allowed(name, target):
                continue
            a, b = layers.floor_of(name), layers.floor_of(target)
            found.append(
                f"{path.relative_to(ROOT)}:{line} {name} ({a.name}) -> {target} ({b.name})"
            )
    return found


class LayerTableTests(SynchronousTestCase):
    def test_floors_only_look_down(self) -> None:
        """
        A floor may import only from floors below it: the table cannot
        itself allow an import to climb.
        """
        for floor in layers.FLOORS:
            for name in floor.may_import:
                self.assertLess(
                    layers.BY_NAME[name].height, floor.height, f"{floor.name} -> {name}"
                )

    def test_every_module_has_a_floor(self) -> None:
        for name, _ in modules():
            layers.floor_of(name)

    def test_longest_prefix_places(self) -> None:
        self.assertEqual(layers.floor_of("kezchat.keylog.merkle").name, "wire")
        self.assertEqual(layers.floor_of("kezchat.keylog.log").name, "domain")
        self.assertEqual(layers.floor_of("kezchat.errors").name, "ground")
        self.assertEqual(layers.floor_of("kezchat").name, "ground")
        self.assertRaises(LookupError, layers.floor_of, "twisted.web")

    def test_folders_show_the_floors(self) -> None:
        """
        The tree reads as the floors: a module directly in C{kezchat/} is
        a ground helper, named as one in the table (any other floor is a
        package), and the composition and the operator tools are their own
        packages.
        """
        ground = layers.BY_NAME["ground"].modules
        top = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
        self.assertEqual([name for name in top if f"kezchat.{name}" not in ground], [])
        for package, floor in [
            ("server", "composition"), ("tools", "tools"), ("registry", "domain"),
        ]:
            for path in sorted((PACKAGE / package).glob("*.py")):
                name = module_name(path)
                self.assertEqual(layers.floor_of(name).name, floor, name)


class LayerTests(SynchronousTestCase):
    def test_no_import_climbs(self) -> None:
        """
        No kezchat module imports one on a floor it may not use.
        """
        self.assertEqual(upward_imports(), [])

    def test_the_checker_sees_a_climb(self) -> None:
        """
        The check is not blind: an import from the domain to HTTP, from
        storage to the domain and from the CLI to the relay are refused.
        """
        self.assertFalse(layers.allowed("kezchat.relay.relay", "kezchat.http.routing"))
        self.assertFalse(layers.allowed("kezchat.storage.backend", "kezchat.sigserver.sigchains"))
        self.assertFalse(layers.allowed("kezchat.cli.main", "kezchat.relay.relay"))
        self.assertFalse(layers.allowed("kezchat.client.http", "kezchat.registry"))
        self.assertTrue(layers.allowed("kezchat.http.messages", "kezchat.relay.relay"))

    def test_storage_serves_no_server(self) -> None:
        """
        C{kezchat.storage} is the storage of both servers and imports
        neither: the sig-server's stores live with the sig-server.
        """
        found = [
            f"{path.relative_to(ROOT)}:{line} {name} -> {target}"
            for name, path in modules()
            if name.startswith("kezchat.storage")
            for line, target in imports(name, path)
            if target.startswith("kezchat.sigserver")
        ]
        self.assertEqual(found, [])

    def test_domain_knows_no_http_server(self) -> None:
        """
        Nothing on the domain floor (or below it) imports C{twisted.web},
        but for the outbound HTTP client API a federation or client request
        is made with, and the quarantine of Twisted's private API.
        """
        found = []
        for name, path in modules():
            if layers.floor_of(name).height > layers.BY_NAME["domain"].height:
                continue
            if name.startswith(layers.TWISTED_WEB_QUARANTINE):
                continue
            for line, target in imports(name, path):
                if target.startswith("twisted.web") and target not in layers.DOMAIN_TWISTED_WEB:
                    found.append(f"{path.relative_to(ROOT)}:{line} {name} -> {target}")
        self.assertEqual(found, [])


class SharedFixtureTests(SynchronousTestCase):
    def test_tests_and_benches_share_only_kezchat_testing(self) -> None:
        """
        C{tests/} and C{bench/} do not import each other: what both need
        is in L{kezchat.testing}.
        """
        found = []
        for folder, other in (("tests", "bench"), ("bench", "tests")):
            for path in sorted((ROOT / folder).rglob("*.py")):
                name = module_name(path)
                for line, target in imports(name, path):
                    if target == other or target.startswith(other + "."):
                        found.append(f"{path.relative_to(ROOT)}:{line} -> {target}")
        self.assertEqual(found, [])
