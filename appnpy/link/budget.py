"""
The node's receive budget: one ceiling on the yamux receive windows of all
its links together, and a count of the bytes its streams hold buffered.

A receive window is a promise: the peer may send that many bytes on the
stream without asking, and if the stream's protocol is paused they all land
in our buffers.  Per-link limits alone multiply by the number of neighbours,
so buildNode makes one L{MuxBudget} per node and hands it to every link's
multiplexer (through L{appnpy.link.yamux.MuxConfig.budget}).  Every stream
reserves its initial window here before it exists (an inbound SYN that does
not fit is reset; L{Multiplexer.openStream} refuses), and auto-tuning grows
a window only while the growth leaves C{tuningReserve} free for new streams.
"""

from __future__ import annotations

__all__ = ["DEFAULT_NODE_RECEIVE_WINDOW", "MuxBudget"]

#: Receive window of all links of a node together: 1024 streams at the
#: spec's initial 256 KiB window, or fewer streams with auto-tuned windows.
DEFAULT_NODE_RECEIVE_WINDOW = 256 * 1024 * 1024


class MuxBudget:
    """
    Receive-window reservations and buffered bytes, summed over every
    stream of every link that shares this object.

    @ivar maxWindow: the ceiling on the sum of all streams' receive windows.
    @ivar tuningReserve: window auto-tuning may not take; it keeps room for
        new streams at their initial window.
    @ivar windowInUse: the sum of the receive windows now promised.
    @ivar buffered: bytes held in stream buffers (unsent data waiting for the
        peer's window or the link, received data waiting for a paused
        protocol), for metrics and tests.
    @ivar peakBuffered: the highest C{buffered} seen.
    """

    __slots__ = ("maxWindow", "tuningReserve", "windowInUse", "buffered", "peakBuffered")

    def __init__(
        self, maxWindow: int = DEFAULT_NODE_RECEIVE_WINDOW, tuningReserve: int | None = None
    ) -> None:
        if maxWindow <= 0:
            raise ValueError(f"maxWindow must be positive, not {maxWindow}")
        self.maxWindow = maxWindow
        self.tuningReserve = maxWindow // 4 if tuningReserve is None else tuningReserve
        self.windowInUse = 0
        self.buffered = 0
        self.peakBuffered = 0

    def __repr__(self) -> str:
        return (
            f"<MuxBudget window {self.windowInUse}/{self.maxWindow},"
            f" buffered {self.buffered} (peak {self.peakBuffered})>"
        )

    def reserveStream(self, window: int) -> bool:
        """
        Reserve a new stream's initial window.

        @return: whether it fits (if not, nothing is reserved).
        """
        if self.windowInUse + window > self.maxWindow:
            return False
        self.windowInUse += window
        return True

    def reserveGrowth(self, extra: int) -> bool:
        """
        Reserve C{extra} bytes of window for auto-tuning, if that leaves
        C{tuningReserve} free.
        """
        if self.windowInUse + extra > self.maxWindow - self.tuningReserve:
            return False
        self.windowInUse += extra
        return True

    def release(self, window: int) -> None:
        """
        A stream is gone: its whole window is free again.
        """
        self.windowInUse -= window

    def hold(self, n: int) -> None:
        """
        C{n} more bytes are buffered.
        """
        self.buffered = buffered = self.buffered + n
        if buffered > self.peakBuffered:
            self.peakBuffered = buffered

    def free(self, n: int) -> None:
        """
        C{n} buffered bytes are gone (sent, delivered or dropped).
        """
        self.buffered -= n
