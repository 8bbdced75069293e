"""Every date the standard speaks of is China Standard Time, whatever the machine's zone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

from etl.common import clock


def test_today_is_the_shanghai_date_near_midnight():
    # 16:30 UTC on 1 June is 00:30 on 2 June in Shanghai
    assert str(clock.today(datetime(2024, 6, 1, 16, 30, tzinfo=timezone.utc))) == "2024-06-02"


def test_naive_times_are_taken_as_cst():
    assert clock.to_cst(datetime(2024, 6, 1, 8, 0)).utcoffset().total_seconds() == 8 * 3600


def test_machine_zone_does_not_matter():
    code = "from etl.common import clock; print(clock.today(), clock.now().utcoffset())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "TZ": tz}).stdout
            for tz in ("UTC", "America/Los_Angeles", "Pacific/Kiritimati")}
    assert len(outs) == 1 and "8:00:00" in outs.pop()
