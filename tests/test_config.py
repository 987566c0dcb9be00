"""
Tests for L{appnpy.ops.config}: defaults, the TOML file, command-line overrides
and validation errors that name the key and the file.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from appnpy.errors import AddressError, ConfigurationError, InvalidCPName
from appnpy.ops.config import (
    DEFAULT_API,
    DEFAULT_LISTEN,
    DEFAULT_MAX_PEERS,
    defaultDataDir,
    resolveConfig,
)

NODE_ID = "a" * 52


def cli(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "config": None,
        "data-dir": "/tmp/appn-test",
        "name": None,
        "listen": [],
        "peers": [],
        "max-peers": None,
        "role": None,
        "trust": None,
        "api": None,
        "plugins": [],
    }
    base.update({k.replace("_", "-"): v for k, v in given.items()})
    return base


class ConfigTests(TestCase):
    """
    The effective configuration merges defaults, file and command line.
    """

    def writeConfig(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """
        With nothing given, the documented defaults apply.
        """
        config = resolveConfig(cli(), Clock())
        self.assertEqual(config.listen, (DEFAULT_LISTEN,))
        self.assertEqual(config.listen, ("tcp:7700",))
        self.assertEqual(config.api, DEFAULT_API)
        self.assertEqual(config.maxPeers, DEFAULT_MAX_PEERS)
        self.assertEqual((config.role, config.trust), ("network", "open"))
        self.assertIsNone(config.plugins)
        self.assertIsNone(config.name)
        self.assertEqual(config.peers, ())

    def test_defaultDataDir(self) -> None:
        """
        The data directory defaults to $XDG_DATA_HOME/appnpy, else
        ~/.local/share/appnpy (also when XDG_DATA_HOME is relative).
        """
        self.assertEqual(defaultDataDir({"XDG_DATA_HOME": "/x/data"}), "/x/data/appnpy")
        self.assertEqual(defaultDataDir({"HOME": "/home/u"}), "/home/u/.local/share/appnpy")
        self.assertEqual(
            defaultDataDir({"HOME": "/home/u", "XDG_DATA_HOME": "rel"}),
            "/home/u/.local/share/appnpy",
        )
        config = resolveConfig(cli(data_dir=None), Clock(), environ={"XDG_DATA_HOME": "/x"})
        self.assertEqual(config.dataDir, "/x/appnpy")

    def test_file(self) -> None:
        """
        Every [node] key is read from the file; [plugin.*] tables are kept.
        """
        path = self.writeConfig(
            f"""
[node]
data-dir = "/srv/appn"
name = "lab.alpha"
listen = "tcp:7800"
peers = ["192.0.2.1:7700", "appn://{NODE_ID}@host.example:7700"]
max-peers = 3
role = "end"
trust = "open"
api = "none"
plugins = ["echo"]

[plugin.echo]
session-limit = 4
"""
        )
        config = resolveConfig(cli(config=path, data_dir=None), Clock())
        self.assertEqual(config.dataDir, "/srv/appn")
        self.assertEqual(config.name, "LAB.ALPHA")
        self.assertEqual(config.listen, ("tcp:7800",))
        self.assertEqual(len(config.peers), 2)
        self.assertEqual(config.maxPeers, 3)
        self.assertEqual(config.role, "end")
        self.assertIsNone(config.api)
        self.assertEqual(config.plugins, ("echo",))
        self.assertEqual(config.pluginSections, {"echo": {"session-limit": 4}})
        self.assertEqual(config.asDict()["node"]["api"], "none")

    def test_commandLineOverridesFile(self) -> None:
        """
        A value on the command line wins over the file's; lists are replaced,
        not merged.
        """
        path = self.writeConfig('[node]\nmax-peers = 3\npeers = ["a.example:1"]\nname = "A.B"\n')
        config = resolveConfig(cli(config=path, max_peers=5, peers=["b.example:2"]), Clock())
        self.assertEqual(config.maxPeers, 5)
        self.assertEqual(config.peers, ("b.example:2",))
        self.assertEqual(config.name, "A.B")

    def test_unknownKey(self) -> None:
        """
        An unknown [node] key is an error naming the key and the file.
        """
        path = self.writeConfig("[node]\nmax-peer = 3\n")
        e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())
        self.assertIn("'max-peer'", str(e))
        self.assertIn(path, str(e))

    def test_unknownSection(self) -> None:
        """
        An unknown top-level table or key is an error naming it.
        """
        for text, name in [("[nodes]\n", "'nodes'"), ("verbose = true\n", "'verbose'")]:
            path = self.writeConfig(text)
            e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())
            self.assertIn(name, str(e))
            self.assertIn(path, str(e))

    def test_wrongTypes(self) -> None:
        """
        A value of the wrong TOML type is an error naming the key.
        """
        for text in ['max-peers = "3"', "peers = 'a:1'", "plugins = [1]", "max-peers = true"]:
            path = self.writeConfig(f"[node]\n{text}\n")
            e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())
            self.assertIn(text.split()[0], str(e))

    def test_badTOMLAndMissingFile(self) -> None:
        """
        Unparseable or unreadable files are configuration errors naming them.
        """
        path = self.writeConfig("[node\n")
        self.assertIn(
            path,
            str(self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())),
        )
        missing = os.path.join(self.mktemp(), "nope.toml")
        e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=missing), Clock())
        self.assertIn(missing, str(e))

    def test_validation(self) -> None:
        """
        Bad values raise the specific error, naming the option.
        """
        self.assertRaises(InvalidCPName, resolveConfig, cli(name="nodot"), Clock())
        e = self.assertRaises(AddressError, resolveConfig, cli(peers=["nope"]), Clock())
        # The option is --peer (repeatable), not the config key's plural.
        self.assertTrue(str(e).startswith("--peer: 'nope': use host:port"), str(e))
        for bad in [0, 1001, "x"]:
            e = self.assertRaises(ConfigurationError, resolveConfig, cli(max_peers=bad), Clock())
            self.assertIn("--max-peers", str(e))
        e = self.assertRaises(ConfigurationError, resolveConfig, cli(role="router"), Clock())
        self.assertIn("--role", str(e))
        self.assertRaises(ConfigurationError, resolveConfig, cli(trust="closed"), Clock())
        e = self.assertRaises(ConfigurationError, resolveConfig, cli(listen=["bogus:1"]), Clock())
        self.assertIn("--listen", str(e))
        self.assertRaises(ConfigurationError, resolveConfig, cli(api="tcp:notaport"), Clock())

    def test_apiOff(self) -> None:
        """
        api = none turns the management API off.
        """
        self.assertIsNone(resolveConfig(cli(api="none"), Clock()).api)
        self.assertEqual(resolveConfig(cli(api="tcp:0"), Clock()).api, "tcp:0")

    def test_errorTextIsUserText(self) -> None:
        """
        str() of a configuration error is the one line naming the option
        and what is wrong, without a preamble repeated before every error.
        """
        e = self.assertRaises(ConfigurationError, resolveConfig, cli(role="router"), Clock())
        self.assertEqual(str(e), "--role must be one of network, end, not 'router'")

    def test_typeWording(self) -> None:
        """
        A wrong type is named in plain words ("a whole number", not "a int").
        """
        for text, words in [
            ('max-peers = "3"', "must be a whole number"),
            ("keepalive-interval = 'x'", "keepalive-interval must be a number"),
            ("cds = 1", "must be true or false"),
            ("name = 1", "must be a string"),
        ]:
            path = self.writeConfig(f"[node]\n{text}\n")
            e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())
            self.assertIn(words, str(e))
            self.assertNotIn("a int", str(e))

    def test_optionNames(self) -> None:
        """
        Errors in repeatable options name the option as typed (--peer,
        --plugin), not the config key (peers, plugins).
        """
        e = self.assertRaises(AddressError, resolveConfig, cli(peers=["a:1", "x"]), Clock())
        self.assertTrue(str(e).startswith("--peer: 'x'"), str(e))
        self.assertNotIn("--peers", str(e))

    def test_inboundSlack(self) -> None:
        """
        inbound-slack: default 2, from the file or --inbound-slack, 0-1000,
        and in the effective configuration.
        """
        self.assertEqual(resolveConfig(cli(), Clock()).inboundSlack, 2)
        path = self.writeConfig("[node]\ninbound-slack = 0\n")
        config = resolveConfig(cli(config=path), Clock())
        self.assertEqual(config.inboundSlack, 0)
        self.assertEqual(config.asDict()["node"]["inbound-slack"], 0)
        line = cli(config=path)
        line["inbound-slack"] = 5
        self.assertEqual(resolveConfig(line, Clock()).inboundSlack, 5)
        for bad in (-1, 1001, "x"):
            line["inbound-slack"] = bad
            e = self.assertRaises(ConfigurationError, resolveConfig, line, Clock())
            self.assertTrue(str(e).startswith("--inbound-slack "), str(e))

    def test_pathSwitchProgressTimeout(self) -> None:
        """
        path-switch-progress-timeout: default 5 s, 0 (off) or 2 to 3600, in
        the effective configuration.
        """
        self.assertEqual(resolveConfig(cli(), Clock()).pathSwitchProgressTimeout, 5.0)
        for good in (0, 2, 12.5):
            path = self.writeConfig(f"[node]\npath-switch-progress-timeout = {good}\n")
            config = resolveConfig(cli(config=path), Clock())
            self.assertEqual(config.pathSwitchProgressTimeout, good)
            self.assertEqual(config.asDict()["node"]["path-switch-progress-timeout"], good)
        for bad in (-1, 1, 3601):
            path = self.writeConfig(f"[node]\npath-switch-progress-timeout = {bad}\n")
            e = self.assertRaises(ConfigurationError, resolveConfig, cli(config=path), Clock())
            self.assertIn("path-switch-progress-timeout", str(e))
