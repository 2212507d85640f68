"""The peer of `dispatcher serve` in dispatcher-bench --only serve: a webhook receiver written the
way pywa's documentation shows (pywa on Flask, served by gunicorn), verifying each POST's
signature (validate_updates with the app secret) and storing each status in SQLite, durably
(WAL, synchronous=FULL, one commit per status as it arrives).

    BENCH_DB=statuses.sqlite BENCH_APP_SECRET=... gunicorn -w 2 -b 127.0.0.1:PORT pywa_receiver:app
"""
import os
import sqlite3
import threading

from flask import Flask
from pywa import WhatsApp, types

DB = os.environ["BENCH_DB"]
_local = threading.local()


def db() -> sqlite3.Connection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = sqlite3.connect(DB, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS statuses (wamid TEXT, status TEXT, timestamp INTEGER, recipient TEXT,"
            " received_at REAL DEFAULT (julianday('now')), PRIMARY KEY (wamid, status, timestamp))"
        )
        _local.connection = connection
    return connection


app = Flask(__name__)
wa = WhatsApp(
    phone_id="123",
    token="bench-token",
    server=app,
    webhook_endpoint="/webhook",
    verify_token="bench-verify",
    app_secret=os.environ["BENCH_APP_SECRET"],
    validate_updates=True,
)


@wa.on_message_status()
def on_status(_: WhatsApp, status: types.MessageStatus) -> None:
    db().execute(
        "INSERT OR IGNORE INTO statuses (wamid, status, timestamp, recipient) VALUES (?, ?, ?, ?)",
        (status.id, str(status.status), int(status.timestamp.timestamp()), status.from_user.wa_id),
    )


@app.get("/health")
def health() -> str:
    return "ok"
