# Shared by scripts/check-release-binary and scripts/container-check: the k8s/ deployment rehearsed on this
# machine. A throwaway PostgreSQL on 127.0.0.1 with password authentication, prepared the way
# k8s/db-init-job.yaml does it (owner role, db/01 + db/02, `migrate` as the owner, db/03_app_role.sql), and the
# service's environment built from k8s/configmap.yaml alone (plus DB_PASSWORD, as the Secret gives it).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# as_user USER CMD...: runs CMD as USER when we are root, as ourselves otherwise.
as_user() {
  local user=$1; shift
  if [ "$(id -u)" -eq 0 ]; then setpriv --reuid="$user" --regid="$(id -gn "$user")" --clear-groups -- "$@"; else "$@"; fi
}
# as_user_prefix USER: the command prefix of as_user, for `"${prefix[@]}" cmd &` (signals then reach cmd itself).
as_user_prefix() {
  if [ "$(id -u)" -eq 0 ]; then echo setpriv --reuid="$1" --regid="$(id -gn "$1")" --clear-groups --; fi
}

# rehearsal_start_pg WORKDIR: starts PostgreSQL; sets PG_PORT, PG_SOCK, PG_USER (the OS user running it).
rehearsal_start_pg() {
  local work=$1 bin
  bin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1)")
  PG_USER=$(id -un); if [ "$(id -u)" -eq 0 ]; then PG_USER=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody); fi
  PG_PORT=$(free_port); PG_SOCK=$work/sock
  mkdir -p "$work/pg" "$PG_SOCK"; chown "$PG_USER" "$work/pg" "$PG_SOCK"
  as_user "$PG_USER" "$bin/initdb" -D "$work/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  as_user "$PG_USER" "$bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w -o "-k $PG_SOCK -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  PG_CTL="$bin/pg_ctl"; PG_DATA=$work/pg
}
rehearsal_stop_pg() { [ -n "${PG_DATA:-}" ] && as_user "$PG_USER" "$PG_CTL" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true; }
rehearsal_restart_pg() { as_user "$PG_USER" "$PG_CTL" -D "$PG_DATA" -l "$PG_DATA/log" -w -o "-k $PG_SOCK -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null; }
rpsql() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" "$@"; }

OWNER_PASSWORD=owner-pw-$RANDOM$RANDOM
APP_PASSWORD="app pw with 'quotes' \$and spaces $RANDOM"

# rehearsal_prepare_db MIGRATE-CMD...: the db-init Job. MIGRATE-CMD runs `migrate` with the owner's variables
# in its environment (DB_HOST, DB_PORT, DB_NAME, DB_USERNAME, DB_PASSWORD).
rehearsal_prepare_db() {
  rpsql -U postgres -d postgres -c "CREATE ROLE coworking_owner LOGIN CREATEROLE PASSWORD '$OWNER_PASSWORD'" \
    -c "CREATE DATABASE coworking OWNER coworking_owner"
  rpsql -U coworking_owner -d coworking -f db/01_init_tables.sql -f db/02_demo_data.sql >/dev/null
  DB_HOST=127.0.0.1 DB_PORT=$PG_PORT DB_NAME=coworking DB_USERNAME=coworking_owner DB_PASSWORD=$OWNER_PASSWORD \
    "$@" >/dev/null
  rpsql -U coworking_owner -d coworking -f db/03_app_role.sql
  echo "ALTER ROLE coworking_app PASSWORD :'app_password';" | rpsql -U coworking_owner -d coworking -v app_password="$APP_PASSWORD"
}

# configmap_env KEY=VALUE...: the ConfigMap's data as KEY=VALUE lines, with the given overrides (same keys only).
configmap_env() {
  python3 - "$@" <<'PY'
import re, sys
text = open("k8s/configmap.yaml").read().split("\ndata:\n", 1)[1]
env = dict(re.findall(r'^  ([A-Z0-9_]+): "(.*)"$', text, re.M))
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    if k not in env:
        sys.exit(f"override {k} is not a ConfigMap key")
    env[k] = v
for k, v in env.items():
    print(f"{k}={v}")
PY
}

# wait_http URL [SECONDS] [PID]: waits until URL answers 200 (gives up early when process PID has exited).
wait_http() {
  local i
  for ((i = 0; i < ${2:-30} * 10; i++)); do
    curl -sf -o /dev/null "$1" && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then echo "the service exited" >&2; return 1; fi
    sleep 0.1
  done
  echo "no 200 from $1 within ${2:-30} s" >&2; return 1
}

# compare_reports PORT OUTDIR: the served reports equal the old service's rendering of the same database.
compare_reports() {
  local port=$1 out=$2 report status=0
  python3 scripts/lib/flask_render.py "host=$PG_SOCK port=$PG_PORT user=coworking_owner dbname=coworking" "$out"
  for report in daily_usage user_visits; do
    curl -sf "http://127.0.0.1:$port/api/reports/$report" >"$out/served_$report"
    if cmp -s "$out/$report" "$out/served_$report"; then echo "  $report: identical to the old service ($(wc -c <"$out/$report") bytes)"
    else echo "  $report: DIFFERENT from the old service" >&2; status=1; fi
  done
  return $status
}
