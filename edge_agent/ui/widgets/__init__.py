"""One widget per visual element of the nurse terminal."""

from edge_agent.ui.widgets.alarm_banner import AlarmBanner
from edge_agent.ui.widgets.bed_row import BedRow
from edge_agent.ui.widgets.news2_panel import News2Panel
from edge_agent.ui.widgets.risk_panel import RiskPanel
from edge_agent.ui.widgets.status_line import StatusLine
from edge_agent.ui.widgets.title_bar import TitleBar
from edge_agent.ui.widgets.vital_tile import VitalTile

__all__ = [
    "AlarmBanner",
    "BedRow",
    "News2Panel",
    "RiskPanel",
    "StatusLine",
    "TitleBar",
    "VitalTile",
]
