#!/usr/bin/env bash
# Installs the system tools the staging stack runs: PostgreSQL and Redis (Debian
# packages), the Toxiproxy server (built with the pinned `go install`), and the
# unprivileged user PostgreSQL runs as when we are root.
#
# Idempotent and quick when everything is present: apt-get update only runs when a
# package is actually missing. As a non-root user it installs nothing system-wide; it
# names what is missing and exits 1.
#
# Environment:
#   RESLAB_VENV        virtualenv whose bin/ receives toxiproxy-server (default: <repo>/.venv;
#                      its bin/ is created if the virtualenv does not exist yet)
#   RESLAB_PG_BIN      directory holding initdb and postgres (default: searched)
#   RESLAB_SYSTEM_USER user PostgreSQL runs as when root (default: reslab)
set -euo pipefail

TOXIPROXY_MODULE="github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION="v2.12.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RESLAB_VENV:-$repo_root/.venv}"
system_user="${RESLAB_SYSTEM_USER:-reslab}"

is_root() { [ "$(id -u)" -eq 0 ]; }
say() { printf 'setup-system: %s\n' "$*"; }
fail() { printf 'setup-system: %s\n' "$*" >&2; exit 1; }

# --- what is missing --------------------------------------------------------------------

postgres_bin_dir() {
    if [ -n "${RESLAB_PG_BIN:-}" ]; then
        [ -x "$RESLAB_PG_BIN/initdb" ] && [ -x "$RESLAB_PG_BIN/postgres" ] && echo "$RESLAB_PG_BIN"
        return 0
    fi
    local dir
    # Highest installed major version first.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

missing_packages=()
[ -n "$(postgres_bin_dir)" ] || missing_packages+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing_packages+=(redis-server)

if [ "${#missing_packages[@]}" -gt 0 ]; then
    if is_root; then
        say "installing ${missing_packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing_packages[@]}"
        # The Debian package starts a cluster and a redis service of its own where a
        # service manager runs; the staging stack runs its own instances on free ports,
        # so those are not needed, and we leave them as the package set them up.
    else
        fail "missing Debian package(s): ${missing_packages[*]}. Install them as root:
    sudo apt-get update && sudo apt-get install -y ${missing_packages[*]}"
    fi
fi
[ -n "$(postgres_bin_dir)" ] || fail "PostgreSQL server binaries (initdb, postgres) not found after installing postgresql; set RESLAB_PG_BIN"
command -v redis-server >/dev/null 2>&1 || fail "redis-server not found after installing redis-server"

# --- the unprivileged user PostgreSQL runs as (it refuses to run as root) -----------------

if is_root && ! id -u "$system_user" >/dev/null 2>&1; then
    say "creating system user $system_user"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group "$system_user"
fi

# --- Toxiproxy server -------------------------------------------------------------------

if command -v toxiproxy-server >/dev/null 2>&1 || [ -x "$venv/bin/toxiproxy-server" ]; then
    :
else
    go_bin="$(command -v go || true)"
    if [ -z "$go_bin" ] && [ -x /usr/local/go/bin/go ]; then
        go_bin=/usr/local/go/bin/go
    fi
    if [ -z "$go_bin" ]; then
        fail "toxiproxy-server is missing and building it needs Go (Debian package golang, 1.23 or newer):
    sudo apt-get install -y golang && $0"
    fi
    # On a fresh clone this runs before the virtualenv exists; `python3 -m venv` later
    # fills the same folder and keeps the binary.
    mkdir -p "$venv/bin"
    # Go keeps its module and build caches under $HOME.
    if [ -z "${HOME:-}" ]; then
        HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
        export HOME
    fi
    say "building toxiproxy-server $TOXIPROXY_VERSION with $go_bin"
    build_dir="$(mktemp -d)"
    trap 'rm -rf "$build_dir"' EXIT
    # `go install` names the binary after its package directory: `server`.
    GOBIN="$build_dir" "$go_bin" install "$TOXIPROXY_MODULE@$TOXIPROXY_VERSION" \
        || fail "go install $TOXIPROXY_MODULE@$TOXIPROXY_VERSION failed (Go 1.23 or newer is needed)"
    install -m 0755 "$build_dir/server" "$venv/bin/toxiproxy-server"
    say "installed $venv/bin/toxiproxy-server"
fi

say "ok"
