"""
benchmarks/rpc_calls.py runs end to end in its smallest form (when
Foolscap, its benchmark-only dependency, is installed).  Timings are never
asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = [
    "appn_seq_per_s",
    "amp_seq_per_s",
    "foolscap_seq_per_s",
    "ratio_amp_seq",
    "ratio_foolscap_seq",
    "appn_100_per_s",
    "amp_100_per_s",
    "foolscap_100_per_s",
    "ratio_amp_100",
    "ratio_foolscap_100",
]


class RPCBenchmarkSmoke(SynchronousTestCase):
    def test_rpcCalls(self) -> None:
        """
        benchmarks/rpc_calls.py --smoke exits 0 and ends with its figures.
        """
        if importlib.util.find_spec("foolscap") is None:
            raise SkipTest("foolscap is not installed (python3 -m pip install foolscap)")
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "rpc_calls.py"), "--smoke"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(figures["benchmark"], "rpc_calls")
        for key in FIGURES:
            self.assertIsInstance(figures[key], (int, float), key)
