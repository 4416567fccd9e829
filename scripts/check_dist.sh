#!/usr/bin/env bash
# `make dist`: build, check and install the four distributions as users get them.
#   1. sdists and wheels of interp-core, interp-torch, interp-tensorflow, interp-jax with
#      `python -m build` (isolated builds; each wheel is built from its sdist) into dist/
#   2. `twine check --strict` on all of them; each carries LICENSE, README.md and py.typed
#   3. a fresh venv, build/dist-venv (recreated each run): the frameworks at
#      requirements-dev.txt's pins (torch==2.13.0 is the CPU build, from local disk), the
#      interp-core wheel with its [cli] extra and the adapter wheels (files, not -e); then
#      `interp --version`, `interp demo` and scripts/dist_smoke.py (GradCAM on the demo model in
#      each adapter), run outside the checkout so that only the installed wheels can be imported.
# DIST_BACKENDS: the adapters installed in step 3 (default "torch tensorflow jax": 1.5 to 2.5
# minutes in all, on 2 cores; "torch" alone: under a minute, and 2.5 GB less on disk).
# TOOLS_PYTHON: has build and twine (default .venv/bin/python). PYTHON: makes the fresh venv
# (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS_PYTHON=${TOOLS_PYTHON:-.venv/bin/python}
PYTHON=${PYTHON:-python3}
DIST=dist
VENV=build/dist-venv
PROJECTS=(. backends/torch backends/tensorflow backends/jax)

step() { printf '\n== [%ss] %s\n' "$SECONDS" "$*"; }

step "build: sdists and wheels into $DIST/"
rm -rf "$DIST"
mkdir -p build
for project in "${PROJECTS[@]}"; do
    "$TOOLS_PYTHON" -m build --outdir "$DIST" "$project" > build/dist-build.log 2>&1 \
        || { cat build/dist-build.log; exit 1; }
    tail -n 1 build/dist-build.log
done

step "twine check --strict"
"$TOOLS_PYTHON" -m twine check --strict "$DIST"/*
"$TOOLS_PYTHON" - "$DIST" <<'PY'
import sys, tarfile, zipfile
from pathlib import Path

dist = Path(sys.argv[1])
names = ["interp_core", "interp_torch", "interp_tensorflow", "interp_jax"]
for name in names:
    (wheel,) = dist.glob(f"{name}-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    data = ("interp_core/data/demo_shapes.npz", "interp_core/data/demo_vit.npz")
    for needed in (f"{name}/py.typed", f"{name}/__init__.py",
                   *(data if name == "interp_core" else ())):
        assert needed in files, f"{wheel.name}: no {needed}"
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files), f"{wheel.name}: LICENSE"
    if name == "interp_core":  # interp view's page: every file of the checkout's static/
        static = sorted(p.relative_to(".").as_posix()
                        for p in Path("interp_core/view/static").glob("*") if p.is_file())
        missing = [f for f in static if f not in files]
        assert not missing, f"{wheel.name}: no {missing}"
        assert "interp_core/view/app.py" in files, f"{wheel.name}: no interp_core/view"
    (sdist,) = dist.glob(f"{name}-*.tar.gz")
    members = tarfile.open(sdist).getnames()
    top = sdist.name.removesuffix(".tar.gz")
    for needed in ("LICENSE", "README.md", "pyproject.toml", f"{name}/py.typed"):
        assert f"{top}/{needed}" in members, f"{sdist.name}: no {needed}"
print(f"{len(names)} wheels and {len(names)} sdists carry LICENSE, README.md and py.typed; "
      "interp-core carries the demo weights and interp view's static files")
PY

read -r -a backends <<< "${DIST_BACKENDS:-torch tensorflow jax}"
step "fresh venv $VENV: interp-core[cli] and the adapter wheels (${backends[*]})"
# A framework's pin, as requirements-dev.txt gives it.
pin() {
    local line
    line=$(sed -n "s/^\($1==[^ #]*\).*/\1/p" requirements-dev.txt)
    [[ -n "$line" ]] || { echo "requirements-dev.txt pins no $1" >&2; exit 1; }
    echo "$line"
}
core=$(ls "$DIST"/interp_core-*.whl)
install=("$core[cli]")
for backend in "${backends[@]}"; do
    case $backend in
        torch) install+=("$(pin torch)") ;;
        tensorflow) install+=("$(pin tensorflow-cpu)") ;;
        jax) install+=("$(pin jax)" "$(pin flax)") ;;
        *) echo "DIST_BACKENDS: unknown backend $backend" >&2; exit 1 ;;
    esac
    install+=("$(ls "$DIST/interp_$backend"-*.whl)")
done
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "pip install ${install[*]}"
"$VENV/bin/pip" install -q "${install[@]}"

step "the installed package, run outside the checkout"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export TF_CPP_MIN_LOG_LEVEL=2  # TensorFlow's start-up notices
version=$("$ROOT/$VENV/bin/interp" --version)
echo "$version"
[[ "$version" == *"$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")"* ]] \
    || { echo "interp --version does not give pyproject.toml's version" >&2; exit 1; }
"$ROOT/$VENV/bin/interp" demo --out "$work/demo" --overwrite
test -s "$work/demo/index.html" || { echo "interp demo wrote no index.html" >&2; exit 1; }
"$ROOT/$VENV/bin/python" "$ROOT/scripts/dist_smoke.py" "${backends[@]}"
echo "make dist: OK in ${SECONDS}s ($DIST/ holds the sdists and wheels)"
