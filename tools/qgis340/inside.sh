#!/bin/bash
# Runs inside the Debian 13 root that tools/qgis340/run.sh made: the checkout is at /rsclip/repo.
#
# The user's path: the release zip in a fresh QGIS profile, the engine's packages installed into that profile
# by the plugin's own installer (pip --target into <profile>/rsclip_search/python/cp313-linux-x86_64, NumPy
# held at Debian's 2.2), then the tests with that folder on their path, and the dock on the QGIS desktop.
set -euo pipefail

REPO=/rsclip/repo
CACHE=$REPO/.qgis340
WORK=$CACHE/work
PROFILE=$WORK/qgis/profiles/default
# PyPI's Linux torch is the CUDA build (it also runs on CPU); the CPU-only build lives on another index.
VARIANT=${QGIS340_TORCH_VARIANT:-cuda}
SCREENSHOT=${QGIS340_SCREENSHOT:-.qgis340/screenshot-qgis340.png}
TOOLS=$CACHE/testtools
# The plugin, Processing and qgis_process tests, the Qt 6 check, and the engine's tests that meet NumPy 2, GDAL 3.10
# and Python 3.13 (tiling, index, search, export, CLI, downloads). Left out, as they are about the build machine
# rather than QGIS: test_deps and test_install_qgis (written for Debian 12's QGIS Python: NumPy 1.24, cp311; the
# installer's run above is the 3.40 case), test_package (git; the zip is built outside and installed above),
# test_interrupt (random SIGKILL timing) and test_evaluation (matplotlib).
DEFAULT_TESTS="tests/test_qt6_compat.py tests/test_plugin.py tests/test_plugin_download.py tests/test_plugin_install.py
    tests/test_processing.py tests/test_qgis_process.py tests/test_tiling.py tests/test_index.py tests/test_vectors.py
    tests/test_pipeline.py tests/test_cli.py tests/test_bad_rasters.py tests/test_untrusted.py tests/test_loading.py
    tests/test_download.py tests/test_engine_purity.py"
# shellcheck disable=SC2206 # QGIS340_TESTS (e.g. from make test-qgis340 QGIS340_TESTS=...) is a list of words
TESTS=(${QGIS340_TESTS:-$DEFAULT_TESTS})
export QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=/tmp/xdg-runtime
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
cd "$REPO"

log() { printf '\n== %s\n' "$*" >&2; }
timed() {  # timed LABEL COMMAND...: run, then say how long it took
    local label=$1 start=$SECONDS
    shift
    "$@"
    log "$label: $((SECONDS - start)) s"
}

install_packages() {  # the plugin's own installer, run by QGIS's Python from the installed plugin
    # pip unpacks into TMPDIR and then moves into the profile: on the same mount that is a rename, not a 5 GB copy
    mkdir -p "$WORK/tmp"
    (cd "$PROFILE/python/plugins" &&
        TMPDIR="$WORK/tmp" python3 -m rsclip_search.engine deps install --profile "$PROFILE" --variant "$VARIANT" --yes 2>&1 |
        grep -v -E '(Collecting|Downloading|Using cached|Processing|Requirement already satisfied|WARNING: Location) ' ||
        true)
    # the filter hides pip's per-file lines (and its notes on local indexes that lack a project); the record the
    # installer writes last says whether the install went through
    test -f "$PROFILE"/rsclip_search/python/cp3*/rsclip-install.json
}

run_tests() {
    # pytest-qt would pick PyQt6 (installed for the Qt 6 check) over the PyQt5 that QGIS 3.40 runs on.
    # pytest-qgis keeps its QGIS profile in <rootdir>/.qgis-settings: a rootdir of this run's own, so that a
    # make test of the same checkout on the host at the same time keeps its own.
    mkdir -p "$WORK/pytest"
    PYTEST_QT_API=pyqt5 PYTHONPATH="$PRIVATE:$TOOLS" python3 -m pytest -q -p no:cacheprovider -c pytest.ini \
        --rootdir "$WORK/pytest" "${TESTS[@]}"
}

# Everything in one function: bash reads it whole, so editing this file during a run cannot derail the run.
main() {
    python3 -c "import sys, numpy; from qgis.core import Qgis; from qgis.PyQt.QtCore import QT_VERSION_STR as qt
print(f'QGIS {Qgis.QGIS_VERSION}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}, Qt {qt}')"

    # pytest-qgis is not packaged by Debian: pip puts it (pure Python) into its own folder, cached between runs.
    if ! cmp -s tools/qgis340/test-requirements.txt "$TOOLS/requirements.txt" 2>/dev/null; then
        log "Installing the test tools into $TOOLS"
        rm -rf "$TOOLS" "$TOOLS.tmp"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-deps --target "$TOOLS.tmp" \
            -r tools/qgis340/test-requirements.txt
        cp tools/qgis340/test-requirements.txt "$TOOLS.tmp/requirements.txt"
        mv "$TOOLS.tmp" "$TOOLS"
    fi

    log "Installing the plugin from its release zip into a fresh QGIS profile"
    mkdir -p "$PROFILE/python/plugins"
    python3 -m zipfile -e "$WORK"/dist/rsclip_search-*.zip "$PROFILE/python/plugins"

    log "The plugin's installer: engine deps install --variant $VARIANT"
    timed "Install of the engine's packages" install_packages
    PRIVATE=$(echo "$PROFILE"/rsclip_search/python/cp3*)
    du -sh "$PRIVATE"
    python3 -m engine deps diagnostics --profile "$PROFILE" | sed -n '1,12p'

    log "Tests on QGIS 3.40: ${TESTS[*]}"
    timed "Tests" run_tests

    if [ -f /rsclip/shared/data/naip/naip_m_4709963_se_14_20160816.tif ]; then
        log "The dock on the QGIS 3.40 desktop under Xvfb"
        timed "Screenshot" env PYTHONPATH="$PRIVATE" python3 tools/screenshot.py --profile "$WORK/qgis" \
            --out "$SCREENSHOT"
    else
        log "No screenshot: the shared test imagery (../shared/data) is absent"
    fi
}

main "$@"
