"""
The chat benchmark runs in its smallest form (timings are never asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ChatBenchmarkSmokeTests(SynchronousTestCase):
    def test_smoke(self) -> None:
        """
        benchmarks/chat_latency.py --smoke exits 0 and ends with its figures
        as one JSON line.
        """
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "chat_latency.py"), "--smoke"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(figures["benchmark"], "chat_latency")
        for key in (
            "latency_median_ms",
            "latency_p99_ms",
            "latency_ratio",
            "fanout_median_ms",
            "fanout_ratio",
        ):
            self.assertIsInstance(figures[key], (int, float), key)
