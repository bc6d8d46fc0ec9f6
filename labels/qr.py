"""QR codes of Digital Link URIs (segno): PNG and SVG files, and the module matrix the PDF sheets draw as vectors.

Error correction level M (15 %) with no boosting, so that a signed URI (about 150 characters) stays at QR version
8-9 and its modules stay large enough on a small label; a 4-module quiet zone, as ISO/IEC 18004 asks.
"""

from __future__ import annotations

import io

import segno

ERROR_CORRECTION = "m"
QrRuns = tuple[int, list[tuple[int, int, int]]]
QUIET_ZONE = 4


def make_qr(uri: str) -> segno.QRCode:
    return segno.make_qr(uri, error=ERROR_CORRECTION, boost_error=False)


def qr_png(uri: str, *, scale: int = 8) -> bytes:
    """A black-on-white PNG, `scale` pixels per module, with the quiet zone."""
    buffer = io.BytesIO()
    make_qr(uri).save(buffer, kind="png", scale=scale, border=QUIET_ZONE)
    return buffer.getvalue()


def qr_svg(uri: str, *, scale: int = 4) -> bytes:
    """An SVG of one path, `scale` user units per module, with the quiet zone."""
    buffer = io.BytesIO()
    make_qr(uri).save(buffer, kind="svg", scale=scale, border=QUIET_ZONE, title=uri)
    return buffer.getvalue()


def qr_runs(uri: str) -> QrRuns:
    """The symbol's size in modules (without quiet zone) and its dark modules as horizontal runs
    (row, first column, length): a few hundred rectangles instead of a thousand squares."""
    qr = make_qr(uri)
    runs: list[tuple[int, int, int]] = []
    size = 0
    for row, cells in enumerate(qr.matrix_iter(border=0)):
        line = [bool(cell) for cell in cells]
        size += 1
        start = None
        for column, dark in enumerate(line):
            if dark and start is None:
                start = column
            elif not dark and start is not None:
                runs.append((row, start, column - start))
                start = None
        if start is not None:
            runs.append((row, start, len(line) - start))
    return size, runs
