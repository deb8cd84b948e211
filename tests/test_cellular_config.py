"""Bad cellular settings (radio profiles, RRC timers, queues, loss models) are refused before anything starts,
naming the key path and what is allowed."""

from __future__ import annotations

import pytest

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology


@pytest.mark.parametrize("override, where", [
    ("networks.lte.radio.profile=nope", "networks.lte.radio.profile"),
    ("networks.lte.radio.tail[0].ms=-1", "networks.lte.radio.tail[0].ms"),
    ("networks.lte.radio.tail[1].on_ms=50", "networks.lte.radio.tail[1]"),
    ("networks.lte.radio.promotion_ms=-5", "networks.lte.radio.promotion_ms"),
    ("throttling.rrc=sometimes", "throttling.rrc"),
    ("throttling.delivery=sometimes", "throttling.delivery"),
    ("networks.lte.loss_model={p_good_bad: 1.5, p_bad_good: 0.1}", "networks.lte.loss_model.p_good_bad"),
    ("networks.lte.loss_model={p_good_bad: 0.1, p_bad_good: 0.1, loss_bad: -0.1}", "networks.lte.loss_model.loss_bad"),
    ("networks.lte.uplink_queue={packets: 10, bytes: 30000}", "networks.lte.uplink_queue"),
    ("networks.lte.uplink_queue={bytes: 100}", "networks.lte.uplink_queue.bytes"),
    ("devices[0].link.downlink_queue={packets: 0}", "devices[0].link.downlink_queue.packets"),
])
def test_bad_cellular_settings_name_the_key(override, where):
    with pytest.raises(ConfigError) as e:
        load_topology("topologies/smoke.yaml", ["devices[0].network=lte", override])
    assert where in str(e.value)


def test_bad_radio_profile_exits_2(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "run.py", "topologies/smoke.yaml", "--set", "networks.3g.radio.profile=i997"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "networks.3g.radio.profile" in r.stderr and "aro, aro_fallback, huang2012" in r.stderr
