"""``alignkit annotate ...``: create, fill, serve and export a preference-annotation database.

Import-light on purpose: FastAPI, SQLAlchemy and uvicorn are imported inside the handlers.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Literal

from pydantic import Field

from alignkit.commands import Command, Group
from alignkit.config import StrictModel

DEFAULT_DB = "annotations.sqlite"
DEFAULT_CRITERIA = "helpfulness,harmlessness,fluency"
_CRITERION_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _user_error(message: str) -> Exception:
    from alignkit.errors import UserError

    return UserError(message)


class DbConfig(StrictModel):
    """An annotation database."""

    db: str = Field(default_factory=lambda: os.environ.get("ALIGNKIT_ANNOTATE_DB", DEFAULT_DB))
    """Annotation database (default: $ALIGNKIT_ANNOTATE_DB or annotations.sqlite)."""


class InitConfig(DbConfig):
    """``alignkit annotate init``."""

    redundancy: int = 3
    """Distinct annotators per item."""
    criteria: str = DEFAULT_CRITERIA
    """Rated criteria, comma-separated (1 to 8 names)."""
    scale: int = 5
    """Rating scale 1..N (2 to 9)."""
    admin_name: str = "admin"
    """Name of the admin user."""


class UserNameConfig(DbConfig):
    """A user of the database, by name."""

    name: str
    """The user's name."""

    cli_positional = ("name",)


class UsersAddConfig(UserNameConfig):
    """``alignkit annotate users add NAME``."""

    admin: bool = False
    """An admin (dashboard and export) instead of an annotator."""


class ImportConfig(DbConfig):
    """``alignkit annotate import FILE``."""

    file: str
    """JSONL of prompt + responses, or prompt/chosen/rejected rows."""
    redundancy: int | None = None
    """Annotators per item (default: the database's)."""
    pairs: Literal["all", "adjacent"] = "all"
    """Pairs from K responses: every pair or consecutive ones."""
    degenerate: Literal["skip", "error"] = "skip"
    """Identical or empty responses: skip and count them, or fail the import."""

    cli_positional = ("file",)


class AnnotateServeConfig(DbConfig):
    """``alignkit annotate serve``: the annotation web app."""

    host: str = "127.0.0.1"
    """Address to bind (default: this machine only)."""
    port: int = 8080
    """TCP port."""
    lease_minutes: float = 30.0
    """An unanswered item goes back to the pool after this long."""
    session_hours: float = 12.0
    """Login session lifetime."""
    max_body_kb: float = 64.0
    """Largest accepted request body (KiB)."""
    login_max_failures: int = 10
    """Failed logins allowed per client address per 5 minutes."""
    secure_cookies: bool = False
    """Mark cookies Secure (when served over HTTPS)."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """uvicorn log level."""


class ExportConfig(DbConfig):
    """``alignkit annotate export``: majority-vote preference rows."""

    output_file: str
    """Output JSONL file."""
    renamed = {"out": "output_file"}
    min_labels: int = 1
    """Leave out items with fewer labels."""
    min_agreement: float = 0.0
    """Leave out items whose winner has a smaller share of the votes."""
    meta: bool = True
    """Write the metadata fields too (--no-meta: only prompt, chosen and rejected)."""


class StatsConfig(DbConfig):
    """``alignkit annotate stats``."""

    as_json: bool = False
    """Print the full summary as JSON (--json)."""
    items: bool = False
    """Include the per-item table."""

    cli_aliases = {"--json": "as_json"}


def _open(cfg):
    from alignkit.annotate.db import DatabaseError, open_database

    try:
        return open_database(cfg.db)
    except DatabaseError as exc:
        raise _user_error(str(exc)) from None


def _say(message: str) -> None:
    """Human-facing messages go to stderr so stdout carries only data (tokens, JSON)."""
    print(message, file=sys.stderr)


def init(cfg) -> int:
    from alignkit.annotate import auth
    from alignkit.annotate.db import DatabaseError, create_database

    criteria = [c.strip() for c in cfg.criteria.split(",") if c.strip()]
    if not criteria or len(criteria) > 8:
        raise _user_error(f"--criteria {cfg.criteria!r}: give 1 to 8 comma-separated names")
    for c in criteria:
        if not _CRITERION_RE.match(c):
            raise _user_error(f"--criteria: {c!r} is not a valid name (lowercase letters, digits, _; max 32)")
    if len(set(criteria)) != len(criteria):
        raise _user_error(f"--criteria {cfg.criteria!r}: duplicate names")
    if not 2 <= cfg.scale <= 9:  # ratings are typed with the digit keys 1-9
        raise _user_error(f"--scale {cfg.scale}: expected 2 to 9")
    if cfg.redundancy < 1:
        raise _user_error(f"--redundancy {cfg.redundancy}: expected >= 1")
    try:
        db = create_database(cfg.db, {"redundancy": cfg.redundancy, "criteria": criteria, "scale": cfg.scale})
    except DatabaseError as exc:
        raise _user_error(str(exc)) from None
    token = auth.add_user(db, cfg.admin_name, role="admin")
    _say(f"created {cfg.db} (redundancy {cfg.redundancy}, criteria {', '.join(criteria)}, scale 1-{cfg.scale})")
    _say(f"admin token for {cfg.admin_name!r} (shown once; only a hash is stored):")
    print(token)
    return 0


def migrate_db(cfg) -> int:
    from alignkit.annotate.db import DatabaseError, migrate, open_database

    try:
        db = open_database(cfg.db, allow_old=True)
        applied = migrate(db)
    except DatabaseError as exc:
        raise _user_error(str(exc)) from None
    _say(f"{cfg.db}: applied migrations {applied}" if applied else f"{cfg.db}: already up to date")
    return 0


def users_add(cfg) -> int:
    from alignkit.annotate import auth

    db = _open(cfg)
    try:
        token = auth.add_user(db, cfg.name, role="admin" if cfg.admin else "annotator")
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    _say(f"token for {cfg.name!r} (shown once; only a hash is stored):")
    print(token)
    return 0


def users_rotate(cfg) -> int:
    from alignkit.annotate import auth

    db = _open(cfg)
    try:
        token = auth.rotate_token(db, cfg.name)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    _say(f"new token for {cfg.name!r} (the old one no longer works):")
    print(token)
    return 0


def users_revoke(cfg) -> int:
    from alignkit.annotate import auth

    db = _open(cfg)
    try:
        auth.revoke_user(db, cfg.name)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    _say(f"revoked {cfg.name!r}: their token and sessions no longer work; their labels are kept")
    return 0


def users_list(cfg) -> int:
    from alignkit.annotate.stats import summary

    db = _open(cfg)
    for a in summary(db, item_limit=0)["annotators"]:
        print(f"{a['name']}\t{a['role']}\t{'active' if a['active'] else 'revoked'}\t{a['labels']} labels")
    return 0


def import_items(cfg) -> int:
    from alignkit.annotate.ingest import import_file
    from alignkit.errors import DataError

    db = _open(cfg)
    if cfg.redundancy is not None and cfg.redundancy < 1:
        raise _user_error(f"--redundancy {cfg.redundancy}: expected >= 1")
    try:
        r = import_file(db, cfg.file, redundancy=cfg.redundancy, pairs=cfg.pairs, degenerate=cfg.degenerate)
    except DataError as exc:
        raise _user_error(f"{exc}\nnothing was imported") from None
    skipped = ", ".join(f"{v} {k}" for k, v in r.degenerate.items() if v) or "none"
    _say(f"{cfg.file}: {r.rows} rows -> {r.added} new items (redundancy {r.redundancy}); "
         f"{r.duplicates} duplicates skipped; degenerate pairs skipped: {skipped}")
    return 0


def serve(cfg) -> int:
    import uvicorn

    from alignkit.annotate.app import ServerSettings, create_app

    if cfg.port < 0 or cfg.port > 65535:
        raise _user_error(f"--port {cfg.port}: expected 0-65535")
    for name in ("lease_minutes", "session_hours", "max_body_kb", "login_max_failures"):
        if getattr(cfg, name) <= 0:
            raise _user_error(f"--{name.replace('_', '-')} {getattr(cfg, name)}: expected > 0")
    db = _open(cfg)
    settings = ServerSettings(lease_s=cfg.lease_minutes * 60, session_lifetime_s=cfg.session_hours * 3600,
                              max_body_bytes=int(cfg.max_body_kb * 1024), login_max_failures=cfg.login_max_failures,
                              secure_cookies=cfg.secure_cookies)
    from alignkit.httpguard import is_loopback

    if not is_loopback(cfg.host):
        _say(f"warning: listening on {cfg.host}, reachable from other machines; serve it behind HTTPS "
             "(a reverse proxy) and pass --secure-cookies")
    _say(f"serving {cfg.db} on http://{cfg.host}:{cfg.port}/ (Ctrl+C to stop)")
    uvicorn.run(create_app(db, settings), host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                workers=1, proxy_headers=False, server_header=False, access_log=cfg.log_level == "debug")
    return 0


def export_rows(cfg) -> int:
    from alignkit.annotate.export import export

    db = _open(cfg)
    try:
        r = export(db, cfg.output_file, min_labels=cfg.min_labels, min_agreement=cfg.min_agreement, meta=cfg.meta)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    dropped = ", ".join(f"{v} {k}" for k, v in sorted(r.dropped.items())) or "none"
    _say(f"wrote {r.written} preference rows to {cfg.output_file}; items left out: {dropped}")
    return 0


def stats(cfg) -> int:
    from alignkit.annotate.stats import summary

    db = _open(cfg)
    s = summary(db, item_limit=None if cfg.items else 0)
    if cfg.as_json:
        print(json.dumps(s, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    pb, ag = s["position_bias"], s["agreement"]
    con.print(f"items {s['n_items']} ({s['items_complete']} complete) · labels {s['labels']} / {s['slots']} slots "
              f"({s['percent_done']}%)")
    rate = "n/a" if pb["left_win_rate"] is None else f"{100 * pb['left_win_rate']:.1f}%"
    ci = f" (95% CI {100 * pb['ci95'][0]:.0f}-{100 * pb['ci95'][1]:.0f}%)" if pb["ci95"] else ""
    con.print(f"position bias: left wins {rate} of {pb['decisive_labels']} decisive labels{ci}")
    fk = "n/a" if ag["fleiss_kappa"] is None else f"{ag['fleiss_kappa']:.3f}"
    con.print(f"Fleiss' kappa {fk} over {ag['items_with_multiple_labels']} items with 2+ labels")
    dist = s["distribution"]
    con.print("labels: " + ", ".join(f"{k} {v}" for k, v in dist["screen"].items())
              + " | stored: " + ", ".join(f"{k} {v}" for k, v in dist["stored"].items()))
    t = Table(title="annotators")
    for col in ("name", "role", "labels", "open", "median s", "status"):
        t.add_column(col)
    for a in s["annotators"]:
        t.add_row(a["name"], a["role"], str(a["labels"]), str(a["open"]),
                  "" if a["median_seconds"] is None else f"{a['median_seconds']:.1f}",
                  "active" if a["active"] else "revoked")
    con.print(t)
    if ag["cohen_pairs"]:
        t = Table(title="Cohen's kappa per annotator pair")
        for col in ("annotators", "shared items", "kappa"):
            t.add_column(col)
        for p in ag["cohen_pairs"]:
            t.add_row(" · ".join(p["annotators"]), str(p["shared_items"]),
                      "n/a" if p["kappa"] is None else f"{p['kappa']:.3f}")
        con.print(t)
    if cfg.items:
        t = Table(title="items")
        for col in ("id", "source", "labels", "votes 1/2/tie/bad", "verdict", "agreement"):
            t.add_column(col)
        for it in s["item_page"]["rows"]:
            v = it["votes"]
            t.add_row(str(it["id"]), it["source"], f"{it['labels']}/{it['redundancy']}",
                      f"{v['response_1']}/{v['response_2']}/{v['tie']}/{v['both_bad']}", it["verdict"],
                      f"{it['agreement']:.2f}" if it["labels"] else "")
        con.print(t)
    return 0


_M = "alignkit.annotate.cli:"
COMMANDS = [
    Group("annotate", "collect human preference labels in a web app"),
    Command("annotate init", "create a database and print the admin token", _M + "InitConfig", _M + "init", echo=False),
    Command("annotate migrate", "upgrade a database to this version's schema", _M + "DbConfig", _M + "migrate_db",
            echo=False),
    Group("annotate users", "manage annotators and admins"),
    Command("annotate users add", "add a user and print their login token once", _M + "UsersAddConfig",
            _M + "users_add", echo=False),
    Command("annotate users list", "list users", _M + "DbConfig", _M + "users_list", echo=False),
    Command("annotate users revoke", "disable a user's token and sessions (labels are kept)", _M + "UserNameConfig",
            _M + "users_revoke", echo=False),
    Command("annotate users rotate", "issue a new token for a user (the old one stops working)",
            _M + "UserNameConfig", _M + "users_rotate", echo=False),
    Command("annotate import", "add items from JSONL (prompt + responses, or chosen/rejected)", _M + "ImportConfig",
            _M + "import_items", echo=False),
    Command("annotate serve", "run the annotation web app", _M + "AnnotateServeConfig", _M + "serve"),
    Command("annotate export", "write majority-vote prompt/chosen/rejected rows", _M + "ExportConfig",
            _M + "export_rows", echo=False),
    Command("annotate stats", "progress, label distribution, position bias, agreement", _M + "StatsConfig",
            _M + "stats", echo=False),
]
