"""
In-memory networks of chat nodes for the chat tests.
"""

from __future__ import annotations

from typing import Any

from appnpy_chat import ChatPlugin
from appnpy_chat.service import ChatConfig, ChatService
from twisted.internet.defer import Deferred

from appnpy.testing import MemoryNetwork, resultOf


class ChatNet:
    """
    A line (or any shape) of network nodes, each with its own chat plugin.
    """

    def __init__(self, count: int = 0, line: bool = True, **config: Any) -> None:
        self.net = MemoryNetwork()
        self.clock = self.net.clock
        # Clock starts at 0; real nodes sign with the epoch time.
        self.clock.advance(1_700_000_000)
        self.config = config
        self.nodes: list[Any] = []
        self.plugins: list[ChatPlugin] = []
        for i in range(count):
            self.add(f"LAB.N{i}")
        if line:
            for a, b in zip(self.nodes, self.nodes[1:], strict=False):
                self.net.link(a, b)
        self.settle()

    def add(self, name: str, plugin: ChatPlugin | None = None) -> Any:
        plugin = plugin or ChatPlugin(ChatConfig(**self.config))
        node = self.net.addNode(name, plugins=[plugin])
        self.nodes.append(node)
        self.plugins.append(plugin)
        return node

    def service(self, i: int) -> ChatService:
        return self.plugins[i].services[self.nodes[i].nodeID]

    def settle(self, seconds: float = 5.0) -> None:
        """
        Let the network converge: several steps, so timers of a second or
        two (retries, merge checks) run in between.
        """
        for _ in range(int(seconds)):
            self.net.flush(advance=1.0)
        self.net.flush()

    def join(self, i: int, room: str) -> dict[str, Any]:
        d = self.service(i).join(room)
        self.settle(2)
        result: dict[str, Any] = resultOf(d)
        return result

    def dm(self, i: int, target: str, text: str) -> dict[str, Any]:
        d = Deferred.fromCoroutine(self.service(i).sayDirect(target, text))
        self.settle(1)
        result: dict[str, Any] = resultOf(d)
        return result

    def texts(self, i: int, room: str) -> list[str]:
        return [m.text for m in self.service(i).rooms[room].history]

    def stopNode(self, i: int) -> None:
        d = self.nodes[i].stopService()
        self.net.flush()
        self.clock.advance(10)
        self.net.flush()
        resultOf(d)
