"""
Section 20 of docs/protocol.md cannot drift from the code: its examples
decode with the plugin's decoder to the messages the section says, and its
tables list the codes and limits the code uses.
"""

from __future__ import annotations

import re
from pathlib import Path

from appnpy_rpc import errors, wire
from twisted.trial.unittest import SynchronousTestCase

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "protocol.md"

EXAMPLES = {
    "call": [0, 7, "calc", "add", [1, 2], {}, 1, 30000],
    "result": [1, 7, 3],
    "error": [2, 8, "bad-arguments", "add: b: expected int, got str"],
    "cancel": [3, 9],
    "describe": [4, 10, "calc"],
}


def section() -> str:
    text = DOC.read_text()
    start = text.index("## 20. The RPC plugin protocol")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


class ProtocolDocTests(SynchronousTestCase):
    def test_examples(self) -> None:
        blocks = dict(
            re.findall(r"<!-- rpc-example: (\w+) -->\s*```hex\n(.*?)```", section(), re.S)
        )
        self.assertEqual(set(blocks), set(EXAMPLES))
        for name, message in EXAMPLES.items():
            data = bytes.fromhex("".join(blocks[name].split()))
            self.assertEqual(wire.FrameReader().feed(data), [data[4:]], name)
            self.assertEqual(wire.decodeBody(data[4:]), message, name)
            self.assertEqual(wire.frame(message), data, name)

    def test_errorCodes(self) -> None:
        text = section()
        table = text[text.index("### 20.7") : text.index("### 20.8")]
        listed = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
        self.assertEqual(
            sorted(listed), sorted(c for c in errors.CODES if c != errors.PROTOCOL_ERROR)
        )

    def test_constants(self) -> None:
        text = section()
        self.assertIn(f"{wire.MAX_FRAME:,} bytes", text)
        self.assertIn(f"| deepest nesting of CBOR containers | {wire.MAX_NESTING} |", text)
        self.assertIn(f"1 to {wire.MAX_TIMEOUT_MS:,} ms", text)
        self.assertIn(f"at most {errors.MAX_MESSAGE:,} characters", text)

    def test_sectionIsLast(self) -> None:
        text = DOC.read_text()
        self.assertGreater(
            text.index("## 20. The RPC plugin protocol"), text.index("## 17. Conformance")
        )
