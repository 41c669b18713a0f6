#!/usr/bin/env python3
"""Renders both reports exactly as the old Flask service did: its SQL, compact JSON with a trailing newline,
str(datetime) for joined_at. Usage: flask_render.py PSQL_CONNINFO OUT_DIR  (writes OUT_DIR/daily_usage, user_visits)
The SQL comes from the binary (`coworking-analytics definition`, the one place it is written; COWORKING_BIN, else
target/debug/coworking-analytics); the rendering is Python's own, as the old service's was.
"""
import os
import datetime
import json
import subprocess
import sys

url, out = sys.argv[1], sys.argv[2]


binary = os.environ.get('COWORKING_BIN', 'target/debug/coworking-analytics')


def definition(report):
    return subprocess.check_output([binary, 'definition', report]).decode()


def q(sql):
    return [l.split('|') for l in subprocess.check_output(['psql', url, '-Atc', sql]).decode().splitlines()]


daily = {k: int(v) for k, v in sorted(q(definition('daily-usage')))}
visits = {}
for uid, joined, n in sorted(q(definition('user-visits')), key=lambda r: int(r[0])):
    visits[uid] = {"joined_at": str(datetime.datetime.fromisoformat(joined)) if joined else None, "visits": int(n)}
open(f"{out}/daily_usage", "w").write(json.dumps(daily, separators=(",", ":")) + "\n")
open(f"{out}/user_visits", "w").write(json.dumps(visits, separators=(",", ":")) + "\n")
