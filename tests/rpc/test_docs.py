"""
The listing of docs/rpc.md runs as it stands: its tests pass.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.reporter import TestResult
from twisted.trial.runner import TestLoader
from twisted.trial.unittest import SynchronousTestCase

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


def loadListing(doc: str, name: str) -> dict[str, object]:
    text = (DOCS / doc).read_text()
    match = re.search(rf"<!-- listing: {name} -->\s*```python\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError(f"no listing {name!r} in docs/{doc}")
    # A module of its own, so that annotations resolve in its namespace.
    import types

    module = types.ModuleType(f"docs_{name}")
    import sys

    sys.modules[module.__name__] = module
    exec(compile(match.group(1), f"docs/{doc}:{name}", "exec"), module.__dict__)
    return module.__dict__


class RPCListing(SynchronousTestCase):
    def test_listingTestsPass(self) -> None:
        namespace = loadListing("rpc.md", "counter")
        suite = TestLoader().loadClass(namespace["CounterTests"])  # type: ignore[arg-type]
        result = TestResult()
        suite.run(result)
        self.assertEqual(result.testsRun, 2)
        self.assertEqual((result.errors, result.failures), ([], []))

    def test_listingServiceIsValid(self) -> None:
        from appnpy_rpc.service import inspectService

        namespace = loadListing("rpc.md", "counter")
        spec = inspectService(namespace["Counter"]())  # type: ignore[operator]
        self.assertEqual(
            sorted(m.spec.format() for m in spec.methods.values()),
            ["increment(key: str, by: int = ...) -> int", "subscribe() -> None"],
        )
