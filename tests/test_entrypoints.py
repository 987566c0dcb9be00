"""
The operator's view of the two entry points, run as real processes:
C{twist appnnode} and C{appn}, as a shell would start them.  Each check is
what an operator sees on the terminal: one C{ERROR:} line and the exit
status, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

import appnpy

#: Runs twist in this interpreter, as tests/interop/harness.py does.
_TWIST = "import sys; from twisted.application.twist._twist import Twist; Twist.main(sys.argv)"
#: A node that should exit at once gets this long before the test fails.
TIMEOUT = 30.0


def run(argv: list[str], wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run a command line to its end (or fail the test after L{TIMEOUT}: a
    node that should have exited but keeps running).
    """
    return subprocess.run(
        [*(wrap or []), *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def twist(*args: str) -> list[str]:
    return [sys.executable, "-c", _TWIST, "--log-format=json", "appnnode", *args]


def appn(*args: str) -> list[str]:
    return [sys.executable, "-m", "appnpy.cli", *args]


class Checks(SynchronousTestCase):
    def assertOneErrorLine(self, result: subprocess.CompletedProcess[str], *fragments: str) -> str:
        """
        Exit status 1 and, on stderr, one line C{ERROR: ...} containing
        C{fragments}; no traceback anywhere and no readiness announced.
        """
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("ERROR: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertNotIn(" ready, role ", result.stdout)
        return lines[0]

    def tempDir(self) -> str:
        root = tempfile.mkdtemp(prefix="appn-entry-")
        self.addCleanup(shutil.rmtree, root, True)
        return root


class NodeStartTests(Checks):
    """
    C{twist appnnode} fails fast and plainly on what the operator must fix.
    """

    def test_apiPortTaken(self) -> None:
        """
        A management API that cannot listen is fatal: one ERROR line naming
        the endpoint and what to do, exit status 1, and no readiness line
        (before, the node printed tracebacks, said it was ready and ran
        without an API).
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = f"tcp:{port}:interface=127.0.0.1"
        result = run(
            twist(
                "--data-dir", self.tempDir(), "--listen", "tcp:0:interface=127.0.0.1", "--api", api
            )
        )
        self.assertOneErrorLine(result, "management API", api, "--api")

    def test_dataDirectoryIsAFile(self) -> None:
        """
        A file where the data directory (or one of its parents) should be.
        """
        root = self.tempDir()
        blocker = os.path.join(root, "blocker")
        with open(blocker, "w"):
            pass
        result = run(twist("--data-dir", os.path.join(blocker, "node"), "--api", "none"))
        self.assertOneErrorLine(result, f"{blocker} is a file, not a directory", "--data-dir")

    def test_readOnlyDataDirectory(self) -> None:
        """
        A data directory on a read-only file system, and a missing one whose
        parent is read-only: a tmpfs mounted read-only in a private mount
        namespace (works as root, where permission bits do not stop
        writes).  The first also holds an identity made before the remount,
        so the failure must be found before any state file is written.
        """
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise self.skipTest("needs root and unshare for a private read-only mount")
        root = self.tempDir()
        mount = os.path.join(root, "ro")
        os.mkdir(mount)
        # Make the mount, give it a data directory with a lock file, then
        # remount it read-only and start the node twice.
        script = (
            'mount -t tmpfs tmpfs "$1" && mkdir "$1/node" && touch "$1/node/node.lock" && '
            'mount -o remount,ro "$1" && shift && "$@"'
        )
        probe = run(["unshare", "-m", "sh", "-c", script, "sh", mount, "true"])
        if probe.returncode != 0:
            raise self.skipTest(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
        for dataDir, words in [
            (os.path.join(mount, "node"), "cannot write to the data directory"),
            (os.path.join(mount, "missing"), "cannot create the data directory"),
        ]:
            result = run(
                ["unshare", "-m", "sh", "-c", script, "sh", mount]
                + twist("--data-dir", dataDir, "--listen", "tcp:0", "--api", "none")
            )
            self.assertOneErrorLine(result, words, "read-only file system", "--data-dir")

    def test_noWritePermission(self) -> None:
        """
        A data directory the user may not write to.  Root ignores permission
        bits through CAP_DAC_OVERRIDE, so as root the node runs without it
        (util-linux's setpriv), as an ordinary user would.
        """
        root = self.tempDir()
        dataDir = os.path.join(root, "node")
        os.mkdir(dataDir, 0o500)
        self.addCleanup(os.chmod, dataDir, 0o700)
        command = twist("--data-dir", dataDir, "--api", "none")
        if os.geteuid() == 0:
            drop = "-dac_override,-dac_read_search"
            command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
        result = run(command)
        self.assertOneErrorLine(result, "permission denied", "--data-dir")

    def test_configErrorOneLine(self) -> None:
        """
        A bad value is one short line naming the option, with no general
        preamble before it.
        """
        result = run(twist("--data-dir", self.tempDir(), "--max-peers", "0"))
        line = self.assertOneErrorLine(result)
        self.assertEqual(line, "ERROR: --max-peers must be between 1 and 1000, not 0")

    def test_version(self) -> None:
        """
        C{twist appnnode --version} prints appnpy's version, not Twisted's.
        """
        result = run(twist("--version"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"appnpy {appnpy.__version__}\n")


class CLITests(Checks):
    """
    C{appn} as a script uses it.
    """

    def test_version(self) -> None:
        """
        C{appn --version} prints appnpy's version.
        """
        result = run(appn("--version"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"appn (appnpy) {appnpy.__version__}\n")

    def test_jsonError(self) -> None:
        """
        With C{--json} an error is a JSON object on stdout with a stable
        C{error} code and a C{message}; the exit status is unchanged.
        """
        dataDir = self.tempDir()
        result = run(appn("--data-dir", dataDir, "--json", "status"))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            json.loads(result.stdout),
            {
                "error": "no-node-running",
                "message": f"no node is running in {dataDir}; start one with: "
                f"twist appnnode --data-dir {dataDir}",
            },
        )
        result = run(appn("--json", "frobnicate"))
        self.assertEqual(result.returncode, 2)
        self.assertEqual(json.loads(result.stdout)["error"], "usage")

    def test_usageErrorOneLine(self) -> None:
        """
        A usage error is one line, without a general preamble.
        """
        result = run(appn("frobnicate"))
        self.assertEqual(result.returncode, 2)
        self.assertTrue(result.stderr.startswith("ERROR: appn: argument COMMAND: invalid choice"))
        self.assertNotIn("The command line is not valid", result.stderr)
