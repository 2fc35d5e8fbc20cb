#!/usr/bin/env bash
# Installs what `warden reauth` needs to drive a browser, idempotently:
#
#   1. Debian's Chromium at $CHROMIUM_PATH (default /usr/bin/chromium), through apt-get;
#   2. the pinned Playwright driver (playwright-core, from the committed package.json and
#      package-lock.json) with `npm ci`, into a project-local directory;
#   3. a driver directory in the layout playwright-rs expects: `node` (a two-line shim that
#      execs Node 20+) and `package/` (playwright-core).
#
# Only package registries are reachable, so nothing here downloads a browser build of its
# own (no `npx playwright install`): Chromium comes from Debian.
#
# Usage:
#   eval "$(scripts/setup-playwright.sh)"     # installs, then exports the variables below
#   scripts/setup-playwright.sh --check       # exits non-zero if anything is missing
#
# Progress goes to stderr; stdout carries only the `export` lines, so `eval` is safe.
#
# Environment:
#   PLAYWRIGHT_DRIVER_DIR  where to build the driver directory (default <repo>/.playwright-driver)
#   CHROMIUM_PATH          the browser binary to require (default /usr/bin/chromium)
#   NODE_BIN               the Node 20+ binary the shim runs (default: `node` on PATH)
#   SKIP_CHROMIUM=1        do not install Chromium (e.g. a build stage that only needs the driver)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRIVER_DIR="${PLAYWRIGHT_DRIVER_DIR:-$ROOT/.playwright-driver}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

log() { printf 'setup-playwright: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The version the lockfile pins; playwright-rs 0.20.1 speaks exactly this protocol.
PINNED="$(sed -n 's/.*"playwright-core": *"\([0-9][0-9.]*\)".*/\1/p' "$ROOT/package.json" | head -n1)"
[[ -n "$PINNED" ]] || die "package.json does not pin playwright-core"

mkdir -p "$DRIVER_DIR"
DRIVER_DIR="$(cd "$DRIVER_DIR" && pwd)"

# Tests in several binaries may call this at once: serialise on a lock so two `npm ci`
# never write the same node_modules.
exec 9>"$DRIVER_DIR/.lock"
flock 9

# --- 1. Chromium --------------------------------------------------------------------------
if [[ ! -x "$CHROMIUM_PATH" && "${SKIP_CHROMIUM:-0}" != "1" ]]; then
    [[ "$CHECK_ONLY" == 1 ]] && die "$CHROMIUM_PATH is missing"
    command -v apt-get >/dev/null || die "$CHROMIUM_PATH is missing and apt-get is not available"
    SUDO=""
    [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    log "installing chromium with apt-get"
    # apt's progress is long; keep it in a log and show it only when something fails.
    APT_LOG="$DRIVER_DIR/apt.log"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$APT_LOG" 2>&1; then
        cat "$APT_LOG" >&2
        die "apt-get could not install chromium"
    fi
    [[ -x "$CHROMIUM_PATH" ]] || die "apt-get installed chromium but $CHROMIUM_PATH does not exist"
fi

# --- 2. Node 20+ ---------------------------------------------------------------------------
NODE_BIN="${NODE_BIN:-$(command -v node || true)}"
[[ -n "$NODE_BIN" && -x "$NODE_BIN" ]] || die "node (20 or newer) is not installed"
NODE_MAJOR="$("$NODE_BIN" -p 'process.versions.node.split(".")[0]')"
# Playwright refuses older runtimes ("Playwright requires Node.js 20 or higher").
(( NODE_MAJOR >= 20 )) || die "$NODE_BIN is Node $NODE_MAJOR; Playwright needs 20 or newer"

# --- 3. playwright-core from the lockfile ---------------------------------------------------
NPM_DIR="$DRIVER_DIR/npm"
STAMP="$NPM_DIR/.installed-lock.sha256"
LOCK_SUM="$(cat "$ROOT/package.json" "$ROOT/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$LOCK_SUM" || ! -f "$NPM_DIR/node_modules/playwright-core/cli.js" ]]; then
    [[ "$CHECK_ONLY" == 1 ]] && die "playwright-core $PINNED is not installed in $NPM_DIR"
    command -v npm >/dev/null || die "npm is not installed"
    log "installing playwright-core $PINNED with npm ci"
    mkdir -p "$NPM_DIR"
    cp "$ROOT/package.json" "$ROOT/package-lock.json" "$NPM_DIR/"
    # --ignore-scripts: playwright-core has no install script we need, and none may
    # download anything.
    (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --omit=dev --loglevel=error >&2)
    echo "$LOCK_SUM" >"$STAMP"
fi

# --- 4. the driver directory layout ---------------------------------------------------------
ln -sfn "npm/node_modules/playwright-core" "$DRIVER_DIR/package"
SHIM="$DRIVER_DIR/node"
WANT_SHIM="$(printf '#!/bin/sh\nexec "%s" "$@"\n' "$NODE_BIN")"
if [[ ! -x "$SHIM" || "$(cat "$SHIM")" != "$WANT_SHIM" ]]; then
    [[ "$CHECK_ONLY" == 1 ]] && die "$SHIM is missing or stale"
    printf '%s\n' "$WANT_SHIM" >"$SHIM.tmp"
    chmod 0755 "$SHIM.tmp"
    mv "$SHIM.tmp" "$SHIM"
fi

INSTALLED="$("$SHIM" "$DRIVER_DIR/package/cli.js" --version 2>/dev/null | awk '{print $2}')"
[[ "$INSTALLED" == "$PINNED" ]] || die "driver reports version '$INSTALLED', expected $PINNED"
log "ready: playwright-core $INSTALLED, node $("$NODE_BIN" --version), $CHROMIUM_PATH"

printf 'export PLAYWRIGHT_DRIVER_PATH=%q\n' "$DRIVER_DIR"
# playwright-rs otherwise installs a SIGINT handler that exits(130) and skips warden's
# graceful shutdown.
printf 'export PLAYWRIGHT_NO_SIGNAL_HANDLER=1\n'
