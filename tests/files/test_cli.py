"""
The C{appn files} commands against a fake management API, and the plugin
object's configuration and interfaces.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from appnpy_files.cli import FilesCommandError, FilesCommands, parseLocation, parseRate
from appnpy_files.plugin import FilesPlugin
from appnpy_files.routes import safeName
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from appnpy.api import (
    ConfigurationError,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IKeywordSearchable,
    IMetricsPlugin,
    IPluginLifecycle,
    ISessionPlugin,
    IStatusPagePlugin,
)


class FakeAPI:
    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, Any]] = []
        self.json = False

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        self.calls.append(("GET", path, query))
        answer = self.answers[("GET", path)]
        return answer(query) if callable(answer) else answer

    def post(self, path: str, body: dict[str, object] | None = None) -> Any:
        self.calls.append(("POST", path, body))
        answer = self.answers[("POST", path)]
        return answer(body) if callable(answer) else answer


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def run(argv: list[str], api: FakeAPI, stdin: str = "") -> tuple[int, str]:
    commands = FilesCommands(stdin=_Stdin(stdin), isatty=lambda s: False)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()

    def add(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.set_defaults(run=func)
        return p

    commands.addCommands(add)
    args = parser.parse_args(argv)
    out = io.StringIO()
    return args.run(args, api, out), out.getvalue()


HIT = {
    "node": "n" * 52,
    "node_name": "LAB.C",
    "share": "music",
    "path": "a/Blue.flac",
    "size": 2048,
    "sha256": "ab" * 32,
    "mtime": 0,
}


class CommandTests(SynchronousTestCase):
    def test_share_add_password_from_stdin(self) -> None:
        """The password comes from stdin (not a terminal), goes in the POST body, and is not printed."""
        api = FakeAPI(
            {
                ("POST", "plugins/files/shares/add"): {
                    "name": "m",
                    "directory": "/d",
                    "protected": True,
                }
            }
        )
        code, out = run(["files", "share", "add", "m", "/d", "--password"], api, "hunter22\n")
        self.assertEqual(code, 0)
        self.assertEqual(api.calls[0][2]["password"], "hunter22")
        self.assertNotIn("hunter22", out)
        self.assertIn("password protected", out)

    def test_search_groups_same_content(self) -> None:
        """Search prints hits as they arrive, marking identical content from another node."""
        other = dict(HIT, node="m" * 52, node_name="LAB.D", share="x")
        pages = iter(
            [
                {"results": [HIT], "next": 1, "done": False},
                {"results": [other], "next": 2, "done": True},
            ]
        )
        api = FakeAPI(
            {
                ("POST", "plugins/files/search"): {"id": "j"},
                ("GET", "plugins/files/search"): lambda q: next(pages),
            }
        )
        code, out = run(["files", "search", "blue"], api)
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertIn("LAB.C:music/a/Blue.flac", lines[0])
        self.assertIn("same content as #1", lines[1])
        self.assertIn("1 distinct", lines[2])

    def test_search_json_lines(self) -> None:
        """With --json, one JSON object per hit, each with its group."""
        api = FakeAPI(
            {
                ("POST", "plugins/files/search"): {"id": "j"},
                ("GET", "plugins/files/search"): {"results": [HIT, HIT], "next": 2, "done": True},
            }
        )
        code, out = run(["files", "search", "blue", "--json"], api)
        hits = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([h["group"] for h in hits], [1, 1])

    def test_terminal_escapes_cleaned(self) -> None:
        """Names from other nodes cannot send control sequences to the terminal."""
        evil = dict(HIT, path="\x1b]0;pwned\x07.txt")
        api = FakeAPI(
            {
                ("POST", "plugins/files/search"): {"id": "j"},
                ("GET", "plugins/files/search"): {"results": [evil], "next": 1, "done": True},
            }
        )
        code, out = run(["files", "search", "x"], api)
        self.assertNotIn("\x1b", out)

    def test_ls_asks_for_password(self) -> None:
        """ls of a protected share asks for the password (stdin) and retries with it."""
        from appnpy.cli import APIRequestFailed

        def ls(body: Any) -> Any:
            if "password" not in body:
                raise APIRequestFailed(403, "password required", "password-required")
            return {
                "entries": [
                    {"name": "plans.txt", "dir": False, "size": 5, "mtime": 0, "sha256": "cd" * 32}
                ]
            }

        api = FakeAPI({("POST", "plugins/files/ls"): ls})
        code, out = run(["files", "ls", "LAB.C:vault"], api, "pw\n")
        self.assertEqual(code, 0)
        self.assertIn("plans.txt", out)
        self.assertEqual(api.calls[-1][2]["password"], "pw")

    def test_get_interrupted_cancels(self) -> None:
        """Ctrl-C during get cancels the transfer in the node (the partial stays) and re-raises."""

        def transfer(q: Any) -> Any:
            raise KeyboardInterrupt

        api = FakeAPI(
            {
                ("POST", "plugins/files/get"): {"id": "t1", "target": "/x"},
                ("GET", "plugins/files/transfer"): transfer,
                ("POST", "plugins/files/cancel"): {},
            }
        )
        with self.assertRaises(KeyboardInterrupt):
            run(["files", "get", "ab" * 32, "-o", "/tmp/x-out"], api)
        self.assertEqual(api.calls[-1][:2], ("POST", "plugins/files/cancel"))
        self.assertEqual(api.calls[-1][2], {"id": "t1"})

    def test_get_failure_is_an_error(self) -> None:
        """A failed download exits through the error path with its message."""
        final = {
            "id": "t",
            "state": "failed",
            "message": "no source left",
            "size": 1,
            "done_bytes": 0,
            "sources": [],
            "resumed_bytes": 0,
            "target": "/x",
        }
        api = FakeAPI(
            {
                ("POST", "plugins/files/get"): {"id": "t", "target": "/x"},
                ("GET", "plugins/files/transfer"): final,
            }
        )
        with self.assertRaises(FilesCommandError) as e:
            run(["files", "get", "ab" * 32, "-o", "/tmp/x-out"], api)
        self.assertIn("no source left", str(e.exception))


class ParsingTests(SynchronousTestCase):
    def test_rates(self) -> None:
        """Rates take binary multiples."""
        self.assertEqual(parseRate("2M"), 2 * 1024 * 1024)
        self.assertEqual(parseRate("500k"), 500 * 1024)
        self.assertEqual(parseRate("1.5MiB"), 1572864)
        self.assertEqual(parseRate("100"), 100)
        with self.assertRaises(argparse.ArgumentTypeError):
            parseRate("fast")

    def test_locations(self) -> None:
        """NODE[:SHARE[/PATH]] splits at the first colon and the first slash."""
        self.assertEqual(parseLocation("LAB.C"), ("LAB.C", "", ""))
        self.assertEqual(parseLocation("LAB.C:music"), ("LAB.C", "music", ""))
        self.assertEqual(parseLocation("LAB.C:music/a/b:c.mp3"), ("LAB.C", "music", "a/b:c.mp3"))
        with self.assertRaises(FilesCommandError):
            parseLocation(":music")

    @given(st.text(max_size=300))
    def test_safe_name(self, name: str) -> None:
        """A file name from another node becomes one harmless path component."""
        base = safeName(name)
        self.assertNotIn("/", base)
        self.assertNotIn("\x00", base)
        self.assertFalse(base.startswith("."))
        self.assertTrue(all(c.isprintable() for c in base))


class PluginObjectTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """The entry point's object provides every interface it declares."""
        import appnpy_files

        plugin = appnpy_files.filesPlugin
        for iface in (
            ISessionPlugin,
            IPluginLifecycle,
            IKeywordSearchable,
            IAPIRoutesPlugin,
            IStatusPagePlugin,
            IMetricsPlugin,
            ICommandPlugin,
        ):
            self.assertTrue(verifyObject(iface, plugin))

    def test_unknown_keys_named(self) -> None:
        """Unknown keys of [plugin.files] are refused, naming them."""
        with self.assertRaises(ConfigurationError) as e:
            FilesPlugin().configure({"upload-limit": 5, "colour": "red", "speed": 1})
        self.assertIn("'colour'", str(e.exception))
        self.assertIn("'speed'", str(e.exception))

    def test_bad_values(self) -> None:
        """Bad values are refused with the key's name."""
        for section, key in [
            ({"session-limit": -1}, "session-limit"),
            ({"search-hits": 0}, "search-hits"),
            ({"upload-limit": "fast"}, "upload-limit"),
            ({"shares": {"m": "/no/such/dir"}}, "m"),
        ]:
            with self.assertRaises(ConfigurationError) as e:
                FilesPlugin().configure(section)
            self.assertIn(key, str(e.exception))
