"""
Tests for shares, their passwords and the attempt limiter
(appnpy_files.shares).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any
from unittest import mock

from appnpy_files import shares
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from appnpy.api import ConfigurationError


class PasswordTests(SynchronousTestCase):
    def test_hashAndVerify(self) -> None:
        """
        A hash made with the default parameters verifies its password and
        no other; it names scrypt and its parameters, and two hashes of one
        password differ (salted).
        """
        stored = shares.hashPassword("correct horse")
        self.assertTrue(stored.startswith(f"scrypt$n={shares.SCRYPT_N},r=8,p=1$"))
        self.assertGreaterEqual(shares.SCRYPT_N, 2**14)
        self.assertTrue(shares.verifyPassword("correct horse", stored))
        self.assertFalse(shares.verifyPassword("correct horsE", stored))
        self.assertFalse(shares.verifyPassword("", stored))
        self.assertNotEqual(stored, shares.hashPassword("correct horse"))
        self.assertNotIn("correct horse", stored)

    def test_constantTimeCompare(self) -> None:
        """
        The comparison is hmac.compare_digest's.
        """
        stored = shares.hashPassword("pw", n=2**4)
        with mock.patch("hmac.compare_digest", return_value=True) as compare:
            self.assertTrue(shares.verifyPassword("wrong", stored))
        compare.assert_called_once()

    def test_unicode(self) -> None:
        """
        Non-ASCII passwords work (UTF-8 bytes are hashed).
        """
        stored = shares.hashPassword("pässwörd-日本", n=2**4)
        self.assertTrue(shares.verifyPassword("pässwörd-日本", stored))

    def test_badHashes(self) -> None:
        """
        Stored hashes that are not scrypt's, or that ask for absurd
        parameters (memory), are refused without quoting them.
        """
        good = shares.hashPassword("x", n=2**4)
        _, params, salt, key = good.split("$")
        for bad in (
            "",
            "plain",
            f"bcrypt${params}${salt}${key}",
            f"scrypt$n=3,r=8,p=1${salt}${key}",
            f"scrypt$n={2**30},r=8,p=1${salt}${key}",
            f"scrypt$n=16,r=8${salt}${key}",
            f"scrypt${params}$!!!${key}",
            f"scrypt${params}${salt}$",
        ):
            e = self.assertRaises(ValueError, shares.parsePasswordHash, bad)
            if bad:
                self.assertNotIn(bad, str(e))

    @settings(max_examples=20, deadline=None)
    @given(st.text(max_size=30))
    def test_anyStoredTextIsHashOrValueError(self, text: str) -> None:
        """
        Any text as a stored hash parses or raises ValueError.
        """
        try:
            shares.parsePasswordHash(text)
        except ValueError:
            pass


class ShareSetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = self.mktemp()
        os.makedirs(self.data)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_config(self) -> None:
        """
        Shares come from the config: a path, or a table with a password hash
        and allow-hardlinks.
        """
        h = shares.hashPassword("pw", n=2**4)
        s = shares.ShareSet()
        s.loadConfig({"music": self.dir, "docs": {"path": self.dir, "password-hash": h, "allow-hardlinks": True}})
        self.assertEqual(s.names(), ["docs", "music"])
        docs = s.get("docs")
        assert docs is not None
        self.assertTrue(docs.protected)
        self.assertTrue(docs.allowHardlinks)
        self.assertEqual(docs.origin, "config")
        self.assertFalse(s.get("music").protected)  # type: ignore[union-attr]

    def test_badConfig(self) -> None:
        """
        Bad names, missing directories, unknown keys, plain-text passwords
        and bad hashes are configuration errors naming the share.
        """
        for bad in (
            {"../x": self.dir},
            {"x": self.dir + "/missing"},
            {"x": {"path": self.dir, "password": "plain"}},
            {"x": {"path": self.dir, "password-hash": "nope"}},
            {"x": {"path": self.dir, "allow-hardlinks": "yes"}},
            {"x": 5},
            [self.dir],
        ):
            self.assertRaises(ConfigurationError, shares.ShareSet().loadConfig, bad)
        e = self.assertRaises(
            ConfigurationError, shares.ShareSet().loadConfig, {"x": {"path": self.dir, "password-hash": "scrypt$secretish"}}
        )
        self.assertNotIn("secretish", str(e))

    def test_refusesNodeState(self) -> None:
        """
        A share that holds the node's data directory (with its identity key)
        is refused: the data directory itself, an ancestor such as /, or a
        directory inside it; from the config as from share add.
        """
        node = os.path.abspath(self.mktemp())
        plugin = os.path.join(node, "plugins", "files")
        os.makedirs(os.path.join(node, "ca"))
        os.makedirs(plugin)
        s = shares.ShareSet(plugin)
        for bad in (node, os.path.dirname(node), "/", os.path.join(node, "ca"), plugin):
            e = self.assertRaises(shares.ShareError, s.add, "x", bad)
            self.assertIn("data directory", str(e))
            self.assertRaises(ConfigurationError, s.loadConfig, {"x": bad})
        self.assertEqual(len(s), 0)
        s.add("ok", self.dir)
        self.assertEqual(s.names(), ["ok"])

    def test_persisted(self) -> None:
        """
        Added shares are persisted in shares.json (mode 0600, no temporary
        file left) and loaded again by a new ShareSet; removing one
        persists too.
        """
        h = shares.hashPassword("pw", n=2**4)
        s = shares.ShareSet(self.data)
        changes: list[int] = []
        s.onChange(lambda: changes.append(1))
        s.add("films", self.dir, h)
        s.add("open", self.dir)
        path = os.path.join(self.data, shares.SHARES_FILE)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.data), [shares.SHARES_FILE])
        again = shares.ShareSet(self.data)
        again.loadPersisted()
        self.assertEqual(again.names(), ["films", "open"])
        self.assertEqual(again.get("films").passwordHash, h)  # type: ignore[union-attr]
        again.remove("films")
        third = shares.ShareSet(self.data)
        third.loadPersisted()
        self.assertEqual(third.names(), ["open"])
        self.assertEqual(len(changes), 2)

    def test_configWins(self) -> None:
        """
        A configured share cannot be removed or added again; a persisted
        share of the same name is ignored.
        """
        s = shares.ShareSet(self.data)
        s.add("x", self.dir)
        c = shares.ShareSet(self.data)
        c.loadConfig({"x": self.dir})
        c.loadPersisted()
        self.assertEqual(c.get("x").origin, "config")  # type: ignore[union-attr]
        self.assertRaises(shares.ShareError, c.remove, "x")
        self.assertRaises(shares.ShareError, c.add, "x", self.dir)
        self.assertRaises(shares.ShareError, c.remove, "nope")
        self.assertRaises(shares.ShareError, c.add, "bad/name", self.dir)
        self.assertRaises(shares.ShareError, c.add, "y", self.dir + "/missing")

    def test_corruptFile(self) -> None:
        """
        A corrupt shares.json is a configuration error, not a crash.
        """
        for content in (b"{", b"[]", b'{"version": 2, "shares": []}', b'{"version": 1, "shares": [{"name": 1}]}'):
            with open(os.path.join(self.data, shares.SHARES_FILE), "wb") as f:
                f.write(content)
            self.assertRaises(ConfigurationError, shares.ShareSet(self.data).loadPersisted)

    def test_failedWriteKeepsState(self) -> None:
        """
        When shares.json cannot be written, the add is undone and reported.
        """
        s = shares.ShareSet(os.path.join(self.data, "missing-dir"))
        self.assertRaises(shares.ShareError, s.add, "x", self.dir)
        self.assertEqual(s.names(), [])

    def test_hashNeverShownOrLogged(self) -> None:
        """
        A share's repr, its description and the log lines of adding and
        removing it hold no password hash.
        """
        h = shares.hashPassword("pw", n=2**4)
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        s = shares.ShareSet(self.data)
        share = s.add("p", self.dir, h)
        s.remove("p")
        salt = h.split("$")[2]
        text = repr(share) + json.dumps(share.describe()) + "".join(
            formatEvent(e) + repr(e) for e in events
        )
        self.assertTrue(events)
        self.assertNotIn(salt, text)

    def test_settings(self) -> None:
        """
        The serving settings have defaults and refuse bad values.
        """
        self.assertEqual(shares.ServeSettings.fromSection({}), shares.ServeSettings(0, 300.0, 2))
        self.assertEqual(
            shares.ServeSettings.fromSection({"upload-limit": 1000, "rescan-interval": 5, "hash-threads": 4}),
            shares.ServeSettings(1000, 5.0, 4),
        )
        bad: list[dict[str, Any]] = [
            {"upload-limit": -1},
            {"upload-limit": 1.5},
            {"rescan-interval": -1},
            {"rescan-interval": True},
            {"hash-threads": 0},
        ]
        for section in bad:
            self.assertRaises(ConfigurationError, shares.ServeSettings.fromSection, section)


class AttemptLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.now = 1000.0
        self.limiter = shares.AttemptLimiter(lambda: self.now)

    def test_growingDelays(self) -> None:
        """
        Two failures are free; from the third, each blocks for a delay
        doubling from 1 s to at most 5 minutes.
        """
        delays = [self.limiter.failed("peer", "s") for _ in range(14)]
        self.assertEqual(delays[:6], [0, 0, 1, 2, 4, 8])
        self.assertEqual(delays[-1], 300)
        self.assertEqual(self.limiter.retryAfter("peer", "s"), 300)
        self.now += 299
        self.assertEqual(self.limiter.retryAfter("peer", "s"), 1)
        self.now += 1
        self.assertEqual(self.limiter.retryAfter("peer", "s"), 0)

    def test_hundredWrongAttempts(self) -> None:
        """
        100 wrong attempts, as fast as allowed, keep the peer blocked for
        the longest delay; other peers and shares are not affected.
        """
        for _ in range(100):
            self.now += self.limiter.retryAfter("peer", "s")
            self.limiter.failed("peer", "s")
        self.assertEqual(self.limiter.retryAfter("peer", "s"), 300)
        self.assertEqual(self.limiter.retryAfter("other", "s"), 0)
        self.assertEqual(self.limiter.retryAfter("peer", "t"), 0)

    def test_successAndQuietForget(self) -> None:
        """
        A success forgets the failures; so does an hour without one.
        """
        for _ in range(5):
            self.limiter.failed("peer", "s")
        self.limiter.succeeded("peer", "s")
        self.assertEqual(self.limiter.retryAfter("peer", "s"), 0)
        self.assertEqual(len(self.limiter), 0)
        for _ in range(5):
            self.limiter.failed("peer", "s")
        self.now += 3601
        self.assertEqual(self.limiter.failed("peer", "s"), 0)

    def test_bounded(self) -> None:
        """
        A flood of node IDs never grows the table past its capacity; the
        least recently failed are forgotten first.
        """
        limiter = shares.AttemptLimiter(lambda: self.now, capacity=100)
        for _ in range(5):
            limiter.failed("victim", "s")
        for i in range(1000):
            limiter.failed(f"sybil{i}", "s")
        self.assertEqual(len(limiter), 100)
        self.assertEqual(limiter.retryAfter("sybil999", "s"), 0)
        self.assertEqual(limiter.retryAfter("victim", "s"), 0)
