# Shared by scripts/test and scripts/demo: install what is missing on Debian/Ubuntu (as root, or with sudo).
# Usage: ensure_debian_packages CHECK:PACKAGE ...   where CHECK is a shell test that succeeds when present.

have_pg_server() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Installs the Debian packages named in "$@" that are not installed yet.
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do have_pkg "$pkg" || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  echo "installing missing Debian packages: ${missing[*]}" >&2
  local as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then as_root=(sudo); else
      echo "error: missing packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
      return 1
    fi
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build and run-time needs of the service: a C toolchain, pkg-config and OpenSSL headers for the bundled libpq,
# and the PostgreSQL server binaries for the private database of the demo and the tests.
ensure_service_deps() {
  command -v cargo >/dev/null || { echo "error: cargo not found; install Rust from https://rustup.rs" >&2; return 1; }
  if command -v dpkg-query >/dev/null; then
    local pkgs=(gcc libc6-dev make pkg-config libssl-dev ca-certificates)
    have_pg_server || pkgs+=(postgresql)
    ensure_debian_packages "${pkgs[@]}"
  fi
  have_pg_server || { echo "error: PostgreSQL server binaries not found (Debian: apt-get install postgresql)" >&2; return 1; }
}

# The CloudWatch emulator for the metrics tests: moto's server in its own virtualenv under target/tools.
MOTO_VERSION=5.2.5
ensure_moto() {
  local venv=target/tools/moto
  if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')"; then
    return 0
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v dpkg-query >/dev/null; then
    ensure_debian_packages python3 python3-venv
  fi
  echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# The diesel CLI, for the test that src/schema.rs is what `diesel print-schema` generates from the migrations:
# built once into target/tools/diesel (a minute or two, unoptimised), against Debian's libpq.
DIESEL_CLI_VERSION=2.3.14
ensure_diesel_cli() {
  local root=target/tools/diesel
  if command -v dpkg-query >/dev/null; then
    ensure_debian_packages libpq-dev
  fi
  if ! { [ -x "$root/bin/diesel" ] && "$root/bin/diesel" --version | grep -q "Version: $DIESEL_CLI_VERSION\$"; }; then
    echo "installing diesel_cli $DIESEL_CLI_VERSION into $root" >&2
    # --debug: it only prints a schema, and an unoptimised build takes half the time.
    cargo install --quiet --locked --debug --root "$root" --version "$DIESEL_CLI_VERSION" \
      --no-default-features --features postgres diesel_cli
  fi
  DIESEL_CLI="$(pwd)/$root/bin/diesel"
  export DIESEL_CLI
}

# The serving checks (scripts/check-serving): Debian's Chromium with a font, and schemathesis plus Playwright's
# Python driver (it drives /usr/bin/chromium; it downloads no browser) in their own virtualenv under target/tools.
SCHEMATHESIS_VERSION=4.32.5
PLAYWRIGHT_VERSION=1.65.2
REDBOT_VERSION=2.7.1
ensure_serving_tools() {
  if command -v dpkg-query >/dev/null; then
    ensure_debian_packages chromium fonts-dejavu-core python3 python3-venv
  fi
  [ -x /usr/bin/chromium ] || { echo "error: /usr/bin/chromium not found (Debian: apt-get install chromium)" >&2; return 1; }
  local venv=target/tools/serving
  if [ -x "$venv/bin/schemathesis" ] && "$venv/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
sys.exit(m.version("schemathesis") != "$SCHEMATHESIS_VERSION" or m.version("playwright") != "$PLAYWRIGHT_VERSION"
         or m.version("redbot") != "$REDBOT_VERSION")
PY
  then
    return 0
  fi
  echo "installing schemathesis==$SCHEMATHESIS_VERSION, playwright==$PLAYWRIGHT_VERSION and redbot==$REDBOT_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" "playwright==$PLAYWRIGHT_VERSION" \
    "redbot==$REDBOT_VERSION"
}
