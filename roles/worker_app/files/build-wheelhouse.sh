#!/usr/bin/env bash
# Build the SoniqueBay wheelhouse on the control node (run by the worker_app role, delegated to localhost).
#
#   build-wheelhouse.sh PYTHON SOURCE_DIR OUT_DIR PY_VERSION PLATFORMS EXTRA_PACKAGES
#
#   PYTHON          a Python on the control node, ideally the targets' exact version: pip downloads wheels for the
#                   targets' Python and platform tags, but evaluates environment markers (python_full_version...)
#                   with this interpreter. Without pip, a build virtualenv is made from it (next to OUT_DIR).
#   SOURCE_DIR      the repository root (pyproject.toml, requirements.txt, worker_app/)
#   OUT_DIR         the wheelhouse to (re)create; replaced atomically when the build succeeded
#   PY_VERSION      the targets' Python, e.g. 3.11
#   PLATFORMS       space-separated wheel platform tags the targets accept (manylinux_2_36_x86_64 ...)
#   EXTRA_PACKAGES  space-separated requirements added to the wheelhouse (e.g. flower==2.0.1)
# Environment: BUILD_CONSTRAINTS, space-separated pins of the build backend (e.g. setuptools==84.2.1).
#              REUSE=1: keep OUT_DIR when it was built from the same inputs (sources, requirements, Python, tags,
#              extras, constraints, this script): the dependencies are then not downloaded again. Unpinned
#              transitive dependencies stay at the versions of that build, so it is off by default.
#
# The application wheel is built from a clean copy of the sources with SOURCE_DATE_EPOCH fixed, so the same
# sources give a byte-identical wheel: the copy to the hosts (and a restart of the workers) happens only when
# something really changed. Dependencies are binary wheels only (--only-binary=:all:).
# Writes OUT_DIR/install.txt (what the hosts install), OUT_DIR.tar (the same files in one reproducible archive: the
# role ships that to the hosts, one transfer instead of one per file) and prints the wheelhouse's files.
set -euo pipefail
python=$1 src=$2 out=${3%/} pyver=$4 platforms=$5 extras=${6:-}

# Plays running at once (several inventories, parallel Molecule scenarios) may share OUT_DIR.
mkdir -p "$(dirname "$out")"
exec 9> "$out.lock"
flock 9

if ! "$python" -m pip --version >/dev/null 2>&1; then
  venv="$(dirname "$out")/build-venv-$("$python" -c 'import platform; print(platform.python_version())')"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  python="$venv/bin/python"
fi
[ -f "$src/pyproject.toml" ] || { echo "no pyproject.toml in $src" >&2; exit 2; }
[ -f "$src/requirements.txt" ] || { echo "no requirements.txt in $src" >&2; exit 2; }
work=$(mktemp -d "$out.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/wheels"

# A clean copy: no build/, *.egg-info, caches or virtualenvs can leak into the wheel.
paths=()
for path in pyproject.toml setup.cfg setup.py MANIFEST.in README.md README.rst LICENSE LICENSE.txt worker_app; do
  [ -e "$src/$path" ] && paths+=("$path")
done
tar -C "$src" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${paths[@]}" | tar -C "$work/src" -xf -

key=$( {
  (cd "$work/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  cat "$src/requirements.txt" "$0" | sha256sum
  "$python" -c 'import platform; print(platform.python_version())'
  printf '%s\n' "$pyver" "$platforms" "$extras" "${BUILD_CONSTRAINTS:-}"
} | sha256sum | cut -c1-32)
if [ "${REUSE:-0}" = 1 ] && [ "$(cat "$out/.build-key" 2>/dev/null)" = "$key" ] && [ -s "$out.tar" ]; then
  echo "# reused: built from the same inputs ($key)"
  ls -1 "$out"
  exit 0
fi

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800} PIP_DISABLE_PIP_VERSION_CHECK=1
# The build backend's version is written into the wheel (WHEEL: Generator): pin it (BUILD_CONSTRAINTS, one
# requirement per word) so that a new setuptools release does not make new bytes, and a restart, of old code.
if [ -n "${BUILD_CONSTRAINTS:-}" ]; then
  printf '%s\n' $BUILD_CONSTRAINTS > "$work/build-constraints.txt"
  export PIP_CONSTRAINT="$work/build-constraints.txt"
fi
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels" "$work/src"
unset PIP_CONSTRAINT
app_wheel=$(cd "$work/wheels" && ls ./*.whl | head -n1)
app_wheel=${app_wheel#./}

platform_args=()
for platform in $platforms; do platform_args+=(--platform "$platform"); done
# shellcheck disable=SC2086
"$python" -m pip download --quiet --only-binary=:all: --dest "$work/wheels" \
  --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 --abi none "${platform_args[@]}" \
  -r "$src/requirements.txt" $extras "$work/wheels/$app_wheel"

cp "$src/requirements.txt" "$work/wheels/requirements.txt"
{
  echo "# What the hosts install from this wheelhouse (pip install --no-index --find-links WHEELHOUSE -r install.txt)."
  echo "-r requirements.txt"
  for extra in $extras; do echo "$extra"; done
  echo "${app_wheel%%-*}"
} > "$work/wheels/install.txt"
# Make every file's mode (and so the copy to the hosts) independent of the umask.
chmod 0644 "$work/wheels"/*
# One archive with fixed owners, modes, times and order: the same files give the same bytes.
(cd "$work/wheels" && LC_ALL=C ls -1) > "$work/files"
tar -C "$work/wheels" --sort=name --mtime=@315532800 --owner=0 --group=0 --numeric-owner --mode=0644 \
  -cf "$work/wheelhouse.tar" -T "$work/files"
echo "$key" > "$work/wheels/.build-key"

rm -rf "$out"
mv "$work/wheels" "$out"
mv -f "$work/wheelhouse.tar" "$out.tar"
ls -1 "$out"
