#!/usr/bin/env bash
# Optional auto-update of a validator run under pm2 (see README, "Auto-update").
#
# Once per run: fetch the tracked branch; if it moved, fast-forward to it, reinstall (scripts/setup.sh),
# check that the new version imports and that its quick unit tests pass, then `pm2 restart` the
# validator. If any step fails, go back to the previous commit, reinstall that, leave the validator
# running as it was, remember the bad commit (it is not tried again until the branch moves once more)
# and log why. Never touches a working tree with local changes, and never merges or rebases: a branch
# that was rewritten upstream is reported, not followed.
#
#   scripts/auto_update.sh            one check (for cron or pm2 --cron)
#   scripts/auto_update.sh --loop     check every VV_UPDATE_INTERVAL_S seconds (default 900)
#
# Environment (all optional):
#   VV_UPDATE_REMOTE      git remote to follow (default: origin)
#   VV_UPDATE_BRANCH      branch to follow (default: the current branch)
#   VV_PM2_APP            pm2 app to restart (default: the name in ecosystem.config.js)
#   VV_PYTHON             interpreter of the checks (default: .venv/bin/python)
#   VV_UPDATE_SETUP       install command (default: bash scripts/setup.sh)
#   VV_UPDATE_TESTS       test paths for pytest (default: a fast subset without Docker or GPU)
#   VV_UPDATE_INTERVAL_S  seconds between checks with --loop (default: 900)
set -euo pipefail

# Everything runs inside main, which bash reads whole before running: the update rewrites this very
# file, and bash would otherwise go on reading the new version from the old offset.
main() {
    cd "$(dirname "$0")/.."
    if [[ "${1:-}" == "--loop" ]]; then
        while true; do
            update_once || true
            sleep "${VV_UPDATE_INTERVAL_S:-900}"
        done
    fi
    update_once
}

log() { printf '%s auto-update: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

pm2_app() {
    if [[ -n "${VV_PM2_APP:-}" ]]; then
        echo "$VV_PM2_APP"
        return
    fi
    # The first `name: "..."` of the pm2 process file.
    sed -n 's/^[[:space:]]*name:[[:space:]]*["'\'']\([^"'\'']*\)["'\''].*/\1/p' ecosystem.config.js | head -n 1
}

install_and_check() {
    local python="${VV_PYTHON:-.venv/bin/python}"
    local tests="${VV_UPDATE_TESTS:-tests/test_settings.py tests/test_commitments.py tests/test_weights.py tests/test_store.py tests/test_version.py tests/test_table.py}"
    log "reinstalling: ${VV_UPDATE_SETUP:-bash scripts/setup.sh}"
    if ! timeout 1800 ${VV_UPDATE_SETUP:-bash scripts/setup.sh} >&2; then
        FAILED="the install (setup) failed"
        return 1
    fi
    if ! timeout 120 "$python" -c "import validator.cli, validator.app, evaluation.pipeline" >&2; then
        FAILED="the new version does not import"
        return 1
    fi
    # shellcheck disable=SC2086  # the test paths are a list
    if ! timeout 900 "$python" -m pytest -q -x -p no:cacheprovider -m "not docker and not gpu" $tests >&2; then
        FAILED="its quick unit tests failed"
        return 1
    fi
}

update_once() {
    local lock=.git/vv-auto-update.lock bad_file=.git/vv-auto-update-bad
    exec 9>"$lock"
    if ! flock -n 9; then
        log "another update is running; skipped"
        return 0
    fi
    local remote="${VV_UPDATE_REMOTE:-origin}"
    local branch="${VV_UPDATE_BRANCH:-$(git rev-parse --abbrev-ref HEAD)}"
    if ! git diff --quiet || ! git diff --cached --quiet; then
        log "local changes in the working tree; not updating (commit or stash them)"
        return 1
    fi
    if ! timeout 120 git fetch --quiet "$remote" "$branch"; then
        log "git fetch $remote $branch failed; trying again next time"
        return 1
    fi
    local old new
    old="$(git rev-parse HEAD)"
    new="$(git rev-parse FETCH_HEAD)"
    if [[ "$new" == "$old" ]]; then
        log "up to date at ${old:0:12}"
        return 0
    fi
    if [[ -f "$bad_file" && "$(cat "$bad_file")" == "$new" ]]; then
        log "${new:0:12} failed its checks before; waiting for a newer commit"
        return 0
    fi
    if ! git merge-base --is-ancestor "$old" "$new"; then
        log "$remote/$branch (${new:0:12}) is not a fast-forward of ${old:0:12} (rewritten upstream?); not updating"
        return 1
    fi
    log "updating ${old:0:12} -> ${new:0:12}"
    if ! git merge --quiet --ff-only "$new"; then
        log "fast-forward to ${new:0:12} failed; not updating"
        return 1
    fi
    FAILED=""
    if install_and_check; then
        local app
        app="$(pm2_app)"
        if [[ -z "$app" ]]; then
            log "updated to ${new:0:12}, but no pm2 app name (set VV_PM2_APP); restart the validator yourself"
            return 1
        fi
        log "checks passed; restarting pm2 app $app"
        if ! timeout 60 pm2 restart "$app" --update-env >&2; then
            log "pm2 restart $app failed; the new code runs at the next restart"
            return 1
        fi
        rm -f "$bad_file"
        log "updated to ${new:0:12}"
        return 0
    fi
    log "${new:0:12} rejected: $FAILED; rolling back to ${old:0:12}"
    echo "$new" >"$bad_file"
    git reset --quiet --hard "$old"
    # The failed install may have changed the environment: put back what the running version needs.
    if ! timeout 1800 ${VV_UPDATE_SETUP:-bash scripts/setup.sh} >&2; then
        log "reinstalling ${old:0:12} after the rollback failed too; check the environment before a restart"
    fi
    log "rolled back to ${old:0:12}; the validator was not restarted"
    return 1
}

main "$@"
exit
