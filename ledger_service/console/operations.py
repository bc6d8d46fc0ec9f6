"""The console's operations dashboard (/console/operations): the platform's key figures for the people who run it —
active organisations, commands per day, parts by status, verification volume, clone flags, and how far the mirror,
the outbox and the audit log's anchoring are behind — read by ledger_service.key_figures, which /metrics reads too.

Figures over the whole consortium, and aggregates only: no organisation, user, part or command is named. Open to the
admins and operators of every member; a viewer gets 403 operators_only. The charts are inline SVG drawn here on the
server (no script, nothing from a CDN), each followed by the table of its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from ledger_service import key_figures
from ledger_service.accounts import SessionUser
from ledger_service.clones import FLAG_KINDS
from ledger_service.console.web import current_user, render, router_for, services_of
from ledger_service.errors import Forbidden

router = router_for("operations")
DAYS = 14
CHART_WIDTH = 320
CHART_HEIGHT = 132
PLOT_HEIGHT = 112  # the bars' room; below it, the days' labels
COLOURS = {
    "confirmed": "#1a7f37", "rejected": "#b42318", "open": "#9a6700", "ok": "#0b5cad", "flagged": "#b42318",
    "scanned_after_scrap": "#6e40c9", "scanned_as_new_after_installation": "#bf3989", "vin_mismatch": "#9a6700",
    "impossible_travel": "#0b5cad", "unregistered_serial": "#b42318",
}  # fmt: skip
COMMAND_SERIES = ("confirmed", "rejected", "open")
SCAN_SERIES = ("ok", "flagged")


def require_operations(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """An admin or operator of any member; a viewer gets 403 operators_only."""
    if not user.principal.may_act:
        raise Forbidden("the operations dashboard is for the admins and operators of members", code="operators_only")
    return user


OperationsUser = Annotated[SessionUser, Depends(require_operations)]


@dataclass(frozen=True)
class Segment:
    series: str
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    label: str  # MM-DD, shown under every other bar
    total: int
    segments: list[Segment]


@dataclass(frozen=True)
class Chart:
    """Stacked bars, one per day, in a CHART_WIDTH x CHART_HEIGHT box."""

    series: tuple[str, ...]
    bars: list[Bar]
    top: int  # the highest day's total: the scale

    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    plot_height: int = PLOT_HEIGHT


def day_chart(days: list[key_figures.DayCount], series: tuple[str, ...]) -> Chart:
    top = max((day.total for day in days), default=0)
    slot = CHART_WIDTH / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        y = float(PLOT_HEIGHT)
        segments = []
        for name in series:
            height = PLOT_HEIGHT * day.counts.get(name, 0) / top if top else 0.0
            y -= height
            if height > 0:
                segments.append(Segment(name, round(y, 2), round(height, 2)))
        bars.append(Bar(x=round(index * slot + slot * 0.15, 2), width=round(slot * 0.7, 2), label=day.day[5:], total=day.total, segments=segments))
    return Chart(series=series, bars=bars, top=top)


@dataclass(frozen=True)
class StatusBar:
    status: str
    count: int
    width: float  # percent of the largest status's count


def status_bars(parts: dict[str, int]) -> list[StatusBar]:
    top = max(parts.values(), default=0)
    return [StatusBar(status, count, round(100 * count / top, 2) if top else 0.0) for status, count in parts.items()]


@router.get("/operations")
def operations(request: Request, user: OperationsUser) -> HTMLResponse:
    services = services_of(request)
    figures = key_figures.dashboard(
        services.service_engine, services.index_engine, chain_id=services.manifest.chain_id, head=services.head, block_time=services.block_time, days=DAYS,
    )  # fmt: skip
    flag_series = tuple(kind for kind in FLAG_KINDS if figures.flag_totals[kind]) or FLAG_KINDS[:1]
    return render(request, user, "console/operations.html", {
        "f": figures,
        "commands_chart": day_chart(figures.commands, COMMAND_SERIES),
        "scans_chart": day_chart(figures.scans, SCAN_SERIES),
        "flags_chart": day_chart(figures.flags, flag_series),
        "status_bars": status_bars(figures.parts),
        "colours": COLOURS,
        "flag_kinds": FLAG_KINDS,
        "totals": {
            "commands": sum(day.total for day in figures.commands),
            "scans": sum(day.total for day in figures.scans),
            "flagged": sum(day.counts["flagged"] for day in figures.scans),
            "flags": sum(figures.flag_totals.values()),
            "parts": sum(figures.parts.values()),
            "open_items": sum(figures.outbox.items.values()),
            "in_flight": sum(figures.outbox.in_flight.values()),
        },
    })  # fmt: skip
