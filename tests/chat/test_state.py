"""
A node keeps its nickname and rooms across restarts and rejoins them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from appnpy_chat import ChatPlugin
from appnpy_chat.service import ChatConfig
from appnpy_chat.state import ChatState
from appnpy_chat.text import checkNick, checkRoom
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.chat.helpers import ChatNet


class StateTests(SynchronousTestCase):
    def test_rejoinAfterRestart(self) -> None:
        """
        A node (with a data directory) that joined rooms and set its nick
        rejoins the rooms under that nick when it starts again, and gets
        their recent history from the host.
        """
        net = ChatNet(2)
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        plugin = ChatPlugin(ChatConfig())
        node = net.net.addNode("LAB.X", plugins=[plugin], dataDir=dataDir)
        net.nodes.append(node)
        net.plugins.append(plugin)
        net.net.link(net.nodes[1], node)
        net.settle()
        net.join(0, "r")
        net.join(2, "r")
        net.join(2, "s")
        net.service(2).setNick("Xavier")
        net.service(0).sayInRoom("r", "while X was here")
        net.settle(1)
        saved = os.path.join(dataDir, "plugins", "chat", "state.json")
        self.assertEqual(json.load(open(saved)), {"nick": "Xavier", "rooms": ["r", "s"]})
        self.assertEqual(os.stat(saved).st_mode & 0o777, 0o600)
        net.stopNode(2)
        net.settle(5)

        again = ChatPlugin(ChatConfig())
        node2 = net.net.addNode("LAB.X", plugins=[again], dataDir=dataDir)
        net.net.link(net.nodes[1], node2)
        net.settle(10)
        service = again.services[node2.nodeID]
        self.assertEqual(service.nick, "Xavier")
        self.assertEqual(sorted(service.rooms), ["r", "s"])
        self.assertEqual(service.rooms["r"].role, "member")
        self.assertEqual([m.text for m in service.rooms["r"].history], ["while X was here"])
        self.assertEqual(service.rooms["s"].role, "host")

    def test_damagedFile(self) -> None:
        """
        A damaged or tampered state file gives what is valid in it, never an
        error.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        state = ChatState(directory)
        path = os.path.join(directory, "state.json")
        for content, expected in (
            ("not json", ("", [])),
            ("[1, 2]", ("", [])),
            (
                '{"nick": "\\u001b[2J", "rooms": ["ok", "Bad Room", 3, "ok", "two"]}',
                ("", ["ok", "two"]),
            ),
            ('{"nick": "fine", "rooms": "r"}', ("fine", [])),
            ("{" + " " * 70000 + "}", ("", [])),
        ):
            with open(path, "w") as f:
                f.write(content)
            self.assertEqual(state.load(maxRooms=32), expected, content[:40])
        with open(path, "w") as f:
            json.dump({"rooms": [f"r{i}" for i in range(100)]}, f)
        self.assertEqual(len(state.load(maxRooms=32)[1]), 32)

    def test_noDataDirectory(self) -> None:
        """
        A node without a data directory keeps nothing (and needs nothing).
        """
        net = ChatNet(1)
        net.join(0, "r")
        self.assertIsNone(net.service(0).state)


class StateFilePropertyTests(SynchronousTestCase):
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.sampled_from(["nick", "rooms", "x"]), inner, max_size=3)
            ),
            max_leaves=15,
        )
    )
    def test_anyJSON(self, value: object) -> None:
        """
        Whatever JSON the state file holds, loading gives a valid nickname
        (or none) and valid room names, never an error.
        """
        directory = tempfile.mkdtemp()
        try:
            with open(os.path.join(directory, "state.json"), "w") as f:
                json.dump(value, f)
            nick, rooms = ChatState(directory).load(maxRooms=8)
        finally:
            shutil.rmtree(directory)
        if nick:
            self.assertEqual(checkNick(nick), nick)
        self.assertLessEqual(len(rooms), 8)
        for room in rooms:
            self.assertEqual(checkRoom(room), room)
