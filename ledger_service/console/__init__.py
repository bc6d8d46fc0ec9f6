"""The member console (/console): server-rendered pages for the people of member organisations, in Chinese and
English, on the same service code as the API (ledger_service.write_service, read functions, the outbox).

The framework (sessions, CSRF, rendering, the catalogue, CSP, pagination) is in web.py and i18n.py; each area is a
module with its own router: signin (sign-in, sign-out, TOTP set-up), home, commands, admin (core), maker (the
manufacturer's pages), custody and scan (the sites'), documents, notifications (quality notifications), audit, and
operations (the platform's key figures).
"""

from __future__ import annotations

from fastapi import FastAPI


def install_console(app: FastAPI) -> None:
    """Mounts the console on the app: its headers, static files and HTML error pages, then every area's routes.
    Call after install_error_handlers (the console's error pages wrap the API's handlers for /console paths)."""
    from ledger_service.console import admin, audit, commands, custody, documents, home, maker, scan, signin
    from ledger_service.console import notifications, operations
    from ledger_service.console.web import install_framework

    install_framework(app)
    for area in (signin, home, commands, admin, maker, custody, scan, documents, notifications, audit, operations):
        app.include_router(area.router)
