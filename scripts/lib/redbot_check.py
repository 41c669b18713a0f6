#!/usr/bin/env python3
"""REDbot (lint for HTTP) over every endpoint and representation of a live server: no BAD and no WARN note but
those listed, each with its reason, in scripts/lib/redbot-allowed.txt (`PATH NOTE_ID reason`).
REDbot asks each URL itself again with gzip, with its validators (If-None-Match, If-Modified-Since) and with a
range, so each line below covers the identity and gzip representations and the 304s.
Usage: redbot_check.py BASE_URL REDBOT_BINARY
"""
import json
import subprocess
import sys

base, redbot = sys.argv[1], sys.argv[2]
PATHS = [
    "/", "/?granularity=week&tz=Europe/Berlin",
    "/api/reports/daily_usage", "/api/reports/daily_usage?from=2026-10-15&to=2026-10-20",
    "/api/reports/daily_usage?granularity=month&tz=America/New_York", "/api/reports/daily_usage?format=csv",
    "/api/reports/user_visits", "/api/reports/user_visits?user_id=1,2", "/api/reports/user_visits?limit=5",
    "/api/reports/user_visits?limit=5&format=csv", "/api/reports/occupancy?tz=Asia/Tokyo",
    "/health_check", "/readiness_check", "/metrics", "/openapi.json",
    "/nope", "/api/reports/daily_usage?from=nonsense",
]
allowed = {}
for line in open("scripts/lib/redbot-allowed.txt"):
    if line.strip() and not line.startswith("#"):
        path, note, reason = line.split(None, 2)
        allowed[(path, note)] = reason.strip()

failures, used = [], set()
for path in PATHS:
    har = subprocess.run([redbot, "-o", "har", base + path], capture_output=True, text=True, timeout=120)
    if har.returncode != 0:
        failures.append(f"{path}: redbot exited {har.returncode}: {har.stderr[-500:]}")
        continue
    notes = [n for e in json.loads(har.stdout)["log"]["entries"] for n in e.get("_red_messages", [])]
    for n in notes:
        if n["level"] not in ("BAD", "WARN"):
            continue
        if (path, n["note_id"]) in allowed:
            used.add((path, n["note_id"]))
            continue
        failures.append(f"{path}: {n['level']} {n['note_id']}: {n['summary']}")
    print(f"  {path}: {len(notes)} notes, {sum(n['level'] in ('BAD', 'WARN') for n in notes)} BAD or WARN")
for key in sorted(set(allowed) - used):
    failures.append(f"{key[0]}: {key[1]} is allowed in redbot-allowed.txt but no longer reported: drop the line")
if failures:
    print("REDbot found:", *failures, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"  REDbot: no BAD or WARN note on {len(PATHS)} URLs but the {len(used)} listed")
