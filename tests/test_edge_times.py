"""A reading with an impossible observation time (a garbled OBX-14 of year 9026, a
monitor clock reset to 1970) is counted and dropped at the gateway's door
(`Gateway.process_reading`, the path of every driver), and the bed scores on: before,
the year-9026 step failed to publish (its `vigil.risk/1` is refused outside
[2000, 2100)) and every later reading of the bed was dropped as 'late'."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from edge_agent.gateway import Gateway
from tests.support.edge import T0, edge_settings, physionet_stay


def test_an_impossible_observation_time_is_counted_dropped_and_the_bed_scores_on(tmp_path):
    import math

    from contracts.vitals import VITAL_NAMES
    from edge_agent.decoder import Reading as R

    gw = Gateway(edge_settings(tmp_path, port=1, gateway_id="gw-times", beds=["bed-1"]))
    try:
        rows = physionet_stay("p015180")

        def reading(hour: int, when=None) -> R:
            row = rows[hour]
            values = {
                n: (None if math.isnan(float(row[n])) else float(row[n])) for n in VITAL_NAMES
            }
            t = when or T0 + timedelta(hours=hour, minutes=10)
            return R("bed-1", "pn-t", "MON01", hour, t, values,
                     {"Age": float(row["Age"]), "Gender": float(row["Gender"])}, icu_admit=T0)  # fmt: skip

        for h in range(6):
            gw.process_reading("bed-1", reading(h))
        bad = reading(6, when=T0.replace(year=9026))
        assert gw.process_reading("bed-1", bad) == []
        gw._mirror_counters()
        assert gw.state.snapshot().counters.get("reading_time_out_of_range") == 1
        early = dataclasses.replace(reading(6), obs_time=T0.replace(year=1970))
        assert gw.process_reading("bed-1", early) == []
        closed = []
        for h in range(6, 12):
            closed += gw.process_reading("bed-1", reading(h))
        assert len(closed) == 6 and gw.beds["bed-1"].errors == 0
        assert len(gw.store.rows("risk")) == 11  # every hour scored and kept, none lost
    finally:
        gw.store.close()
