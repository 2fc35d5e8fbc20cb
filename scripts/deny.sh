#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, bans and sources
# always; RustSec advisories whenever the advisory database can be fetched.
# The database lives on GitHub; where GitHub is unreachable (this project's
# CI machines reach only package registries) the advisory check cannot run,
# and this script says so instead of passing it silently.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $VERSION"; then
    echo "installing cargo-deny $VERSION (a few minutes, once)" >&2
    cargo install --locked --quiet cargo-deny --version "$VERSION"
fi

if timeout 20 git ls-remote --exit-code https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny check advisories bans licenses sources
else
    cargo deny check bans licenses sources
    echo "cargo-deny: advisories NOT CHECKED: github.com/RustSec/advisory-db is unreachable from here." >&2
    echo "  Run 'scripts/deny.sh' on a machine with GitHub access before a release." >&2
fi
