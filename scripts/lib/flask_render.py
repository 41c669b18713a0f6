#!/usr/bin/env python3
"""Renders both reports exactly as the old Flask service did: its SQL, compact JSON with a trailing newline,
str(datetime) for joined_at. Usage: flask_render.py PSQL_CONNINFO OUT_DIR  (writes OUT_DIR/daily_usage, user_visits)
"""
import datetime
import json
import subprocess
import sys

url, out = sys.argv[1], sys.argv[2]


def q(sql):
    return [l.split('|') for l in subprocess.check_output(['psql', url, '-Atc', sql]).decode().splitlines()]


daily = {k: int(v) for k, v in sorted(q(
    "SELECT DATE(created_at), COUNT(*) FROM tokens WHERE used_at IS NOT NULL GROUP BY DATE(created_at)"))}
visits = {}
for uid, joined, n in sorted(q("SELECT t.user_id, u.joined_at, COUNT(*) FROM tokens t LEFT JOIN users u "
                               "ON u.id = t.user_id GROUP BY t.user_id, u.joined_at"), key=lambda r: int(r[0])):
    visits[uid] = {"joined_at": str(datetime.datetime.fromisoformat(joined)) if joined else None, "visits": int(n)}
open(f"{out}/daily_usage", "w").write(json.dumps(daily, separators=(",", ":")) + "\n")
open(f"{out}/user_visits", "w").write(json.dumps(visits, separators=(",", ":")) + "\n")
