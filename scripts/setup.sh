#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh:
#   1. system libraries: SuiteSparse (CHOLMOD) headers, OpenBLAS, a C compiler;
#   2. a virtual environment in .venv, made with the python3 on PATH (>= 3.10);
#   3. an editable install of this checkout with the test extras.
# Every step checks first, so a second run does nothing and takes about a second.
# Set PYTHON=/path/to/python3 to choose the interpreter for a new .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
PIP_SPEC=".[test]"
STAMP="$VENV/.interlace_nb-install"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '\n[setup] STOP: %s\n\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# 1. System libraries. scikit-sparse has no wheels: it compiles against the
#    SuiteSparse headers, and CHOLMOD is only fast with OpenBLAS behind it
#    (Debian's CHOLMOD otherwise runs on the reference BLAS, ~3x slower).
APT_PKGS=(libsuitesparse-dev libopenblas0-pthread libopenblas-dev)

has_python_h() { "$1" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; }

if command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
    missing=()
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    [ -e /usr/include/suitesparse/cholmod.h ] || missing+=(libsuitesparse-dev)
    command -v cc >/dev/null || missing+=(build-essential)
    # Python headers and venv/ensurepip are separate Debian packages; apt can
    # only supply them for Debian's own python3, not for pyenv/conda ones.
    if ! command -v "$PY" >/dev/null; then
        missing+=(python3 python3-venv python3-dev)
    elif [[ "$(readlink -f "$(command -v "$PY")")" == /usr/bin/python3* ]]; then
        has_python_h "$PY" || missing+=(python3-dev)
        "$PY" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        if [ "$(id -u)" -ne 0 ]; then
            die "missing system packages. Run this once, then re-run this script:
    sudo apt-get update && sudo apt-get install -y ${missing[*]}"
        fi
        say "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
    else
        say "system packages present (SuiteSparse, OpenBLAS, compiler)"
    fi
    # libopenblas0-pthread registers itself as the libblas.so.3 alternative;
    # warn if someone pinned the reference BLAS by hand.
    blas="$(readlink -f /usr/lib/*-linux-gnu/libblas.so.3 2>/dev/null | head -n1 || true)"
    case "$blas" in
        *openblas*) ;;
        *) say "WARNING: libblas.so.3 is not OpenBLAS ($blas); CHOLMOD will be slow." \
               "Fix: update-alternatives --config libblas.so.3-$(uname -m)-linux-gnu" ;;
    esac
else
    # Not Debian/Ubuntu: we cannot install SuiteSparse ourselves. Accept an
    # existing one (Homebrew, conda, /usr/local) and point the build at it.
    inc=""
    for d in "${SUITESPARSE_INCLUDE_DIR:-}" /usr/include/suitesparse /usr/local/include/suitesparse \
             /opt/homebrew/include/suitesparse "${CONDA_PREFIX:-/nonexistent}/include/suitesparse"; do
        if [ -n "$d" ] && [ -e "$d/cholmod.h" ]; then inc="$d"; break; fi
    done
    if [ -z "$inc" ]; then
        case "$(uname -s)" in
            Darwin) hint="brew install suite-sparse" ;;
            *)      hint="sudo dnf install suitesparse-devel   (or: sudo pacman -S suitesparse)" ;;
        esac
        die "SuiteSparse/CHOLMOD headers (cholmod.h) not found, and this is not an apt system.
    Install them:  $hint
    then re-run this script (a SuiteSparse elsewhere: set SUITESPARSE_INCLUDE_DIR and
    SUITESPARSE_LIBRARY_DIR). Or use conda instead of this script:
    conda install -c conda-forge scikit-sparse=0.4.16 && pip install -e '.[test]'"
    fi
    export SUITESPARSE_INCLUDE_DIR="$inc"
    export SUITESPARSE_LIBRARY_DIR="${SUITESPARSE_LIBRARY_DIR:-$(dirname "$(dirname "$inc")")/lib}"
    say "using SuiteSparse headers in $inc"
fi

# ---------------------------------------------------------------------------
# 2. Virtual environment. Recreate it if it is broken (its interpreter was
#    removed) or too old.
command -v "$PY" >/dev/null || die "no '$PY' on PATH; install Python >= 3.10."
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PY is $("$PY" -V 2>&1); interlace_nb needs Python >= 3.10 (set PYTHON=/path/to/python3.x)."
has_python_h "$PY" ||
    die "$PY has no C headers (Python.h), needed to compile scikit-sparse; install its -dev package."

if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    [ -e "$VENV" ] && say "removing unusable $VENV"
    rm -rf "$VENV"
    say "creating $VENV with $(command -v "$PY") ($("$PY" -V 2>&1))"
    "$PY" -m venv "$VENV"
fi

# ---------------------------------------------------------------------------
# 3. Editable install, skipped when the stamp matches: the stamp is a hash of
#    pyproject.toml, the venv's Python version and the install spec, and the
#    package must still be installed (-I: ignore the checkout's own egg-info).
key="$("$VENV/bin/python" - "$PIP_SPEC" <<'EOF'
import hashlib, sys
with open("pyproject.toml", "rb") as f:
    print(hashlib.sha256(f.read() + sys.version.encode() + sys.argv[1].encode()).hexdigest())
EOF
)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$key" ] &&
   "$VENV/bin/python" -I -c 'import importlib.metadata as m; m.version("interlace_nb")' 2>/dev/null; then
    say "editable install is current (pyproject.toml unchanged)"
else
    rm -f "$STAMP"
    say "pip install -e '$PIP_SPEC' (first time builds scikit-sparse against SuiteSparse: ~1 min)"
    # Build isolation gives scikit-sparse's build its numpy and Cython (both in
    # its pyproject build-requires), so nothing needs pre-installing here.
    "$VENV/bin/python" -m pip install --progress-bar off -e "$PIP_SPEC" >&2
    echo "$key" >"$STAMP"
fi
say "ready: $VENV"
