"""Print-ready PDF label sheets (reportlab): the QR code drawn as vectors, the human-readable GS1 identifiers and the
manufacturer's name beside it.

Two layouts:
- ``a4``: A4 sheets of 3 x 8 labels of 70 x 37 mm (the common 24-up sheet), QR 31 mm;
- ``thermal``: one 60 x 40 mm label per page, as thermal label printers take a roll, QR 30 mm.

Text in the GS1 human-readable form ``(01) 04012345000016``, ``(21) serial``, ``(10) lot``. The manufacturer's name
may be Chinese: it is set in WenQuanYi Micro Hei (Debian's fonts-wqy-microhei, embedded as a subset) when that font
is installed, else in the Adobe-GB1 CID font STSong-Light, which PDF readers supply themselves.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from labels.lot import Label, Progress
from labels.qr import QUIET_ZONE, QrRuns, qr_runs
from partledger.errors import ConfigError

CJK_FONT_FILES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/wqy-microhei/wqy-microhei.ttc"),
)
LATIN, LATIN_BOLD = "Helvetica", "Helvetica-Bold"
VERIFY_HINT = "扫码验真 Scan to verify"
PARALLEL_THRESHOLD = 64


@dataclass(frozen=True)
class SheetLayout:
    name: str
    page: tuple[float, float]  # points
    label: tuple[float, float]
    columns: int
    rows: int
    top_left: tuple[float, float]  # the first label's top-left corner, from the page's top-left
    padding: float
    qr_side: float  # including the quiet zone

    @property
    def per_page(self) -> int:
        return self.columns * self.rows


LAYOUTS = {
    "a4": SheetLayout("a4", A4, (70 * mm, 37 * mm), 3, 8, (0.0, (A4[1] - 8 * 37 * mm) / 2), 2.5 * mm, 32 * mm),
    "thermal": SheetLayout("thermal", (60 * mm, 40 * mm), (60 * mm, 40 * mm), 1, 1, (0.0, 0.0), 2 * mm, 30 * mm),
}


@functools.cache
def cjk_font() -> str:
    """The registered font for text beyond Latin-1: WenQuanYi Micro Hei when installed, else STSong-Light (CID)."""
    for path in CJK_FONT_FILES:
        if path.exists():
            pdfmetrics.registerFont(TTFont("WenQuanYiMicroHei", str(path), subfontIndex=0))
            return "WenQuanYiMicroHei"
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


def font_for(text: str, *, bold: bool = False) -> str:
    if all(ord(char) < 256 for char in text):
        return LATIN_BOLD if bold else LATIN
    return cjk_font()


def fit_text(text: str, font: str, *, width: float, largest: float, smallest: float, max_lines: int) -> tuple[float, list[str]]:
    """The largest size (down to `smallest`) at which `text` fits `width` on one line; below that, `text` wrapped at
    `smallest` on up to `max_lines` lines (at spaces where it can, else between characters), the last one cut with an
    ellipsis if it still does not fit."""
    size = largest
    while size >= smallest:
        if pdfmetrics.stringWidth(text, font, size) <= width:
            return size, [text]
        size -= 0.25
    size = smallest
    lines: list[str] = []
    rest = text
    while rest and len(lines) < max_lines:
        cut = len(rest)
        while cut > 1 and pdfmetrics.stringWidth(rest[:cut], font, size) > width:
            cut -= 1
        space = rest.rfind(" ", 0, cut)
        if cut < len(rest) and space > 0:
            cut = space
        lines.append(rest[:cut].strip())
        rest = rest[cut:].lstrip()
    if rest:
        last = lines[-1]
        while last and pdfmetrics.stringWidth(last + "…", font, size) > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return size, lines


def encode_all(uris: Sequence[str], *, workers: int = 1) -> Iterator[QrRuns]:
    """The QR runs of every URI, in order. segno's mask selection costs ~25 ms a symbol in pure Python, so a large
    lot may be encoded by `workers` processes. They are spawned, not forked (the caller may run threads that a fork
    would copy mid-lock), so the calling program's main module must be import-safe (`if __name__ == "__main__"`)."""
    if workers < 2 or len(uris) < PARALLEL_THRESHOLD:
        yield from map(qr_runs, uris)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(qr_runs, uris, chunksize=16)


def draw_qr(canvas: Canvas, symbol: QrRuns, *, x: float, y: float, side: float) -> None:
    """A QR symbol as filled rectangles in a `side` square (quiet zone included) whose bottom-left is (x, y), written
    as raw PDF path operators: one `re` per run, one fill."""
    size, runs = symbol
    module = side / (size + 2 * QUIET_ZONE)
    top = y + side - QUIET_ZONE * module
    left = x + QUIET_ZONE * module
    ops = [f"{left + column * module:.3f} {top - (row + 1) * module:.3f} {length * module:.3f} {module:.3f} re" for row, column, length in runs]
    canvas.saveState()
    canvas.setFillColorRGB(0, 0, 0)
    canvas.addLiteral("\n".join(ops) + "\nf")
    canvas.restoreState()


def draw_label(canvas: Canvas, label: Label, symbol: QrRuns, layout: SheetLayout, *, x: float, y: float) -> None:
    """One label whose bottom-left corner is (x, y), with `symbol` the QR runs of its URI."""
    width, height = layout.label
    pad = layout.padding
    side = min(layout.qr_side, height - 2 * pad)
    draw_qr(canvas, symbol, x=x + pad, y=y + (height - side) / 2, side=side)
    text_x = x + pad + side + 1.5 * mm
    text_width = x + width - pad - text_x
    cursor = y + height - pad
    lines: list[tuple[str, str, float]] = []
    name_font = font_for(label.manufacturer, bold=True)
    size, wrapped = fit_text(label.manufacturer, name_font, width=text_width, largest=7.5, smallest=5.0, max_lines=2)
    lines += [(line, name_font, size) for line in wrapped]
    for ai, value in (("01", label.gtin), ("21", label.serial), ("10", label.lot)):
        text = f"({ai}) {value}"
        size, wrapped = fit_text(text, LATIN, width=text_width, largest=7.0, smallest=4.5, max_lines=2)
        lines += [(line, LATIN, size) for line in wrapped]
    hint_font = font_for(VERIFY_HINT)
    size, wrapped = fit_text(VERIFY_HINT, hint_font, width=text_width, largest=5.5, smallest=4.0, max_lines=1)
    lines += [(line, hint_font, size) for line in wrapped]
    canvas.setFillColorRGB(0, 0, 0)
    for index, (text, font, size) in enumerate(lines):
        cursor -= size * (1.25 if index else 1.0) + (0.6 * mm if index == len(lines) - 1 or index == 1 else 0)
        if cursor < y + pad / 2:
            break
        canvas.setFont(font, size)
        canvas.drawString(text_x, cursor, text)


def write_pdf(
    labels: Sequence[Label],
    out: Path | BinaryIO,
    *,
    layout: str = "a4",
    title: str = "PartLedger labels",
    progress: Progress | None = None,
    workers: int = 1,
) -> int:
    """The labels as a PDF in `layout` ("a4" or "thermal"); returns the number of pages. `workers`: processes that
    encode the QR symbols (see encode_all)."""
    try:
        sheet = LAYOUTS[layout]
    except KeyError:
        raise ConfigError(f"unknown label layout {layout!r}: {', '.join(LAYOUTS)}") from None
    if not labels:
        raise ConfigError("no labels to print")
    canvas = Canvas(str(out) if isinstance(out, Path) else out, pagesize=sheet.page, pageCompression=1, invariant=1)
    canvas.setTitle(title)
    canvas.setCreator("PartLedger")
    canvas.setSubject("GS1 Digital Link labels with manufacturer signatures")
    label_width, label_height = sheet.label
    pages = 0
    for index, (label, symbol) in enumerate(zip(labels, encode_all([label.uri for label in labels], workers=workers))):
        slot = index % sheet.per_page
        if slot == 0 and index:
            canvas.showPage()
        if slot == 0:
            pages += 1
        column, row = slot % sheet.columns, slot // sheet.columns
        x = sheet.top_left[0] + column * label_width
        y = sheet.page[1] - sheet.top_left[1] - (row + 1) * label_height
        draw_label(canvas, label, symbol, sheet, x=x, y=y)
        if progress is not None:
            progress(1)
    canvas.showPage()
    canvas.save()
    return pages
