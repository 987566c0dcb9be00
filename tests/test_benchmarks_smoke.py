"""
Smoke tests of the benchmarks: each runs with C{--smoke} (tiny sizes, one
run) as a real two-process benchmark and ends with one JSON line carrying its
named figures.  Timings are never asserted: these machines drift too much,
and the benchmarks report ratios for a person to judge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.rings import requireRing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED = {
    "bulk": ["appn_GBps", "tls_GBps", "ratio", "goal"],
    "echo_rtt": ["appn_rtps", "amp_rtps", "ratio", "goal"],
    "session_open": [
        "appn_seq_per_s",
        "tls_seq_per_s",
        "ratio_seq",
        "appn_10_per_s",
        "tls_10_per_s",
        "ratio_10",
        "goal",
    ],
    "memory": [
        "session_KiB_dialer",
        "session_KiB_listener",
        "link_KiB_dialer",
        "link_KiB_listener",
        "tls_conn_KiB_dialer",
        "tls_conn_KiB_listener",
    ],
    "fairness": [
        "min_MBps",
        "median_MBps",
        "max_MBps",
        "min_max_ratio",
        "aggregate_GBps",
        "tls_GBps",
    ],
    "bootstrap": ["all_at_max_peers_s", "ready_first_start_s", "dials_hanging"],
    "frame_flood": ["data_1B_cpu_s_per_MB", "data_1B_us_per_frame", "flood_cpu_share_per_link"],
    "files_download": ["appn_GBps", "https_curl_GBps", "tls_GBps", "ratio", "ratio_tls", "goal"],
    "files_multisource": ["one_MBps", "two_MBps", "ratio", "goal"],
    "path_switch": [
        "cut_first_byte_s",
        "cut_lost_bytes",
        "cut_new_session_s",
        "kill_first_byte_s",
        "kill_lost_bytes",
        "kill_new_session_s",
    ],
    "routed_bulk": [
        "direct_GBps",
        "relay1_GBps",
        "relay2_GBps",
        "ratio_relay1",
        "ratio_relay2",
        "ratio_relay1_core_per_process",
        "ratio_relay2_core_per_process",
    ],
}

#: Benchmarks that need more than Python: skipped where the host cannot run
#: them, failed instead under CI (which installs what they need).
REQUIRES = {"path_switch": requireRing}
#: Seconds a smoke run may take, where more than the default.
TIMEOUTS = {"path_switch": 240}


class BenchmarkSmokeTests(SynchronousTestCase):
    """
    Each benchmark runs end to end in its smallest form.
    """

    def smoke(self, name: str) -> None:
        """
        C{python benchmarks/NAME.py --smoke} exits 0 and its last stdout
        line is a JSON object naming the benchmark, with every figure a
        number.
        """
        if name in REQUIRES:
            REQUIRES[name]()
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"), "--smoke"],
            capture_output=True,
            text=True,
            timeout=TIMEOUTS.get(name, 120),
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        lines = result.stdout.strip().splitlines()
        self.assertTrue(lines, result.stderr[-2000:])
        figures = json.loads(lines[-1])
        self.assertEqual(figures["benchmark"], name)
        for key in EXPECTED[name]:
            self.assertIsInstance(figures[key], (int, float), (key, figures))


def _smokeTest(name: str) -> object:
    def test(self: BenchmarkSmokeTests) -> None:
        self.smoke(name)

    test.__doc__ = f"benchmarks/{name}.py --smoke runs and reports its figures."
    return test


for _name in EXPECTED:
    setattr(BenchmarkSmokeTests, f"test_{_name}", _smokeTest(_name))
