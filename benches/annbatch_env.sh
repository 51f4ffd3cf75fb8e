#!/usr/bin/env bash
# Build the environment the loader benchmark runs `annbatch` in.
#
# annbatch needs Python >= 3.12 and this project's machines have 3.11 only (Debian bookworm). The
# script builds CPython 3.13 from Debian trixie's source package (deb.debian.org is reachable as a
# package registry) into $PREFIX, then a virtual environment with annbatch and zarrs from PyPI.
# benches/test_bench_singlecell.py finds it through SPARSEZARR_ANNBATCH_PYTHON (default
# /work/annbatch-env/bin/python) and skips the annbatch rows when it is absent.
#
# Usage: bash benches/annbatch_env.sh [PREFIX] [VENV]     (about 15 minutes on 2 cores)
set -euo pipefail
PREFIX=${1:-/work/py313/install}
VENV=${2:-/work/annbatch-env}
WORK=$(dirname "$PREFIX")
mkdir -p "$WORK"
if [ ! -x "$PREFIX/bin/python3.13" ]; then
    echo "deb-src http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/trixie-src.list
    apt-get update -q
    apt-get install -y -q libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev uuid-dev libgdbm-dev
    cd "$WORK"
    apt-get source --download-only python3.13
    tar xf python3.13_*.orig.tar.xz
    cd Python-3.13.*/
    ./configure --prefix="$PREFIX" > "$WORK/configure.log"
    make -j"$(nproc)" > "$WORK/make.log"
    make install > "$WORK/install.log"
fi
"$PREFIX/bin/python3.13" -m venv "$VENV"
"$VENV/bin/pip" install -q "annbatch[zarrs]"
"$VENV/bin/python" -c "import annbatch, zarr, zarrs; print('annbatch', annbatch.__version__, 'zarr', zarr.__version__, 'zarrs', zarrs.__version__)"
