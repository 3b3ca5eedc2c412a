#!/usr/bin/env bash
# Lints the CI templates users copy: actionlint on the GitHub workflow, and check-jsonschema
# with its bundled GitHub-workflow and GitLab-CI schemas (no network needed once installed).
# The tools live in a venv of e4race's cache (ci/install-deps.sh creates it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${E4RACE_LINT_VENV:-${E4RACE_CACHE:-$HOME/.cache/e4race}/lint-venv}
if [ ! -x "$VENV/bin/actionlint" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  echo "lint-ci-templates: $VENV lacks actionlint/check-jsonschema; run bash ci/install-deps.sh" >&2
  exit 1
fi
"$VENV/bin/actionlint" ci/github/e4race.yml
"$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows ci/github/e4race.yml
"$VENV/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci ci/gitlab/e4race.yml
echo "lint-ci-templates: ci/github/e4race.yml and ci/gitlab/e4race.yml pass"
