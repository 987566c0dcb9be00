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


    def _failed(self, error: str, message: str) -> str:
        final = {
            "id": "t",
            "state": "failed",
            "error": error,
            "message": message,
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
        return str(e.exception)

    def test_get_failure_next_step(self) -> None:
        """
        A failure of the target does not suggest a resume that cannot help;
        one of the network does.
        """
        self.assertNotIn("resume", self._failed("target-exists", "/x exists already"))
        self.assertIn("another target", self._failed("read-only", "read-only file system"))
        self.assertIn("free some space", self._failed("disk-full", "no space left"))
        self.assertIn(
            "search or ls again",
            self._failed("no-source", "no source left (n: file-changed: the file changed on disk)"),
        )
        self.assertIn("run the same get again", self._failed("no-source", "no source left"))

    def test_ls_of_a_file_says_how_to_get_it(self) -> None:
        """ls of a path that is no directory says that get fetches files."""
        from appnpy.cli import APIRequestFailed

        def ls(body: Any) -> Any:
            raise APIRequestFailed(404, "no such directory", "no-such-file")

        api = FakeAPI({("POST", "plugins/files/ls"): ls})
        with self.assertRaises(FilesCommandError) as e:
            run(["files", "ls", "LAB.C:music/a.flac"], api)
        self.assertIn("appn files get LAB.C:music/a.flac", str(e.exception))

    def test_search_prints_whole_hash(self) -> None:
        """The hash a search prints is one that get accepts (all 64 digits)."""
        api = FakeAPI(
            {
                ("POST", "plugins/files/search"): {"id": "j"},
                ("GET", "plugins/files/search"): {"results": [HIT], "next": 1, "done": True},
            }
        )
        code, out = run(["files", "search", "blue"], api)
        self.assertIn("ab" * 32, out.splitlines()[0])

    def test_output_directory_with_slash_must_exist(self) -> None:
        """-o DIR/ for a missing directory is an error, not a file named DIR."""
        api = FakeAPI({})
        missing = self.mktemp() + "/"
        with self.assertRaises(FilesCommandError) as e:
            run(["files", "get", "ab" * 32, "-o", missing], api)
        self.assertIn("create it first", str(e.exception))
        self.assertEqual(api.calls, [])

    def test_transfers_and_share_list_json(self) -> None:
        """transfers and share list take --json like search and ls."""
        api = FakeAPI(
            {
                ("GET", "plugins/files/transfers"): {"transfers": []},
                ("GET", "plugins/files/shares"): {"shares": []},
            }
        )
        self.assertEqual(json.loads(run(["files", "transfers", "--json"], api)[1]), {"transfers": []})
        self.assertEqual(json.loads(run(["files", "share", "list", "--json"], api)[1]), {"shares": []})

    def test_share_list_missing_directory(self) -> None:
        """share list says when a share's directory is gone."""
        share = {"name": "m", "directory": "/gone", "files": 1, "bytes": 2, "missing": True}
        api = FakeAPI({("GET", "plugins/files/shares"): {"shares": [share]}})
        self.assertIn("directory missing", run(["files", "share", "list"], api)[1])

    def test_progress_bar_counts_only_new_bytes(self) -> None:
        """
        The bar shown while the node checks a partial file is replaced once
        the resumed part is known: the final bar starts at it, so the rate
        counts only what came over the network; a terminal that reports no
        width still gets a visible bar.
        """
        t0 = {"name": "f", "sha256": "ab" * 32, "size": 100 << 20, "state": "preparing",
              "done_bytes": 0, "resumed_bytes": 0, "sources": [], "id": "t", "target": "/x"}
        t1 = dict(t0, state="downloading", done_bytes=60 << 20, resumed_bytes=50 << 20)
        t2 = dict(t1, state="complete", done_bytes=100 << 20)
        pages = iter([t0, t1, t2])
        api = FakeAPI({("GET", "plugins/files/transfer"): lambda q: next(pages)})
        bars: list[tuple[bool, int]] = []
        from appnpy_files import cli

        real = cli._progressBar

        def spy(t: Any, stream: Any, provisional: bool) -> Any:
            bar = real(t, io.StringIO(), provisional)
            bars.append((provisional, bar.initial))
            return bar

        self.patch(cli, "_progressBar", spy)
        final = FilesCommands()._follow(api, "t", io.StringIO(), bar=True)  # type: ignore[arg-type]
        self.assertEqual(final["state"], "complete")
        self.assertEqual(bars, [(True, 0), (False, 50 << 20)])
        stream = io.StringIO()
        real(t1, stream, False).close()
        self.assertIn("50.0M/100M", stream.getvalue())
        self.assertIn("|#", stream.getvalue())


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


class RefusalMessageTests(SynchronousTestCase):
    def test_delay_named(self) -> None:
        """A refusal for wrong passwords says how many seconds to wait."""
        from appnpy_files.client import RemoteError
        from appnpy_files.routes import _remote
        from appnpy_files.transfers import refusalMessage

        slow = RemoteError("slow-down", "too many wrong passwords; wait", 8)
        self.assertEqual(refusalMessage(slow), "too many wrong passwords: try again in 8 s")
        bad = RemoteError("bad-password", "wrong password", 2)
        self.assertIn("in 2 s", _remote(bad).message)
        self.assertEqual(refusalMessage(RemoteError("bad-password", "wrong password")), "wrong password")


class PageSectionTests(SynchronousTestCase):
    def test_ended_transfer_counts_its_sources(self) -> None:
        """
        The web page counts the sources of an ended download as the
        command line does (those that sent bytes), not as 0.
        """

        class Transfers:
            def describe(self) -> list[dict[str, Any]]:
                return [
                    {
                        "name": "f",
                        "sha256": "ab" * 32,
                        "state": "complete",
                        "done_bytes": 5,
                        "size": 5,
                        "rate": 0,
                        "resumed_bytes": 0,
                        "message": None,
                        "sources": [{"node": "n", "bytes": 5, "active": False}],
                    }
                ]

        plugin = FilesPlugin()
        plugin.transfers = Transfers()  # type: ignore[assignment]
        section = plugin.pageSection()
        assert section is not None
        self.assertEqual(section.rows[0][5], 1)


class SharesRouteTests(SynchronousTestCase):
    def test_missing_directory_flagged(self) -> None:
        """GET shares marks a share whose directory is gone."""
        from types import SimpleNamespace

        from appnpy_files.routes import FilesAPI

        here = self.mktemp()
        import os

        os.makedirs(here)
        serve = SimpleNamespace(
            describeShares=lambda: [
                {"name": "a", "directory": here},
                {"name": "b", "directory": here + "-gone"},
            ]
        )
        plugin = SimpleNamespace(node=object(), serve=serve, transfers=object(), jobs=object())
        answer = FilesAPI(plugin).shares(None)  # type: ignore[arg-type]
        self.assertEqual([s["missing"] for s in answer["shares"]], [False, True])
