#!/usr/bin/env bash
# One command on an air-gapped GPU host (from the repository root), after copying dist/ there:
#   bash tools/install_bundle.sh [BUNDLE_DIR=dist] [--unpack-gl]
# 1. preflight before any work: the bundle's parts (checksums), the host Python (3.12, x86_64) and its torch,
#    EGL able to open a device (with --unpack-gl, the bundle's glvnd loaders are unpacked into / if it is not);
# 2. unpack, verify every file against MANIFEST.json, pip install --no-index the wheels into $PREFIX/site
#    (the host's torch stays the one used), write $PREFIX/env.sh;
# 3. check: every libero_90 task builds, resets and renders both cameras; imports, Ray, MLflow, requirements
#    -> $PREFIX/check_libero90.json (CHECK=0 skips it).
# PYTHON (default python3) is the host interpreter that has torch; PREFIX defaults to .bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE_DIR=${1:-dist}
shift || true
PY=${PYTHON:-python3}
PREFIX=${PREFIX:-.bundle}
"$PY" -m libero_dp.bundle install "$BUNDLE_DIR" --prefix "$PREFIX" --python "$(command -v "$PY")" "$@"
# shellcheck disable=SC1091
source "$PREFIX/env.sh"
if [ "${CHECK:-1}" != 0 ]; then
  "$PY" tools/check_libero90.py --site "$PREFIX/site" --out "$PREFIX/check_libero90.json" ${CHECK_ARGS:-}
fi
