#!/usr/bin/env bash
# The pull-request plan job, shared by the GitHub Actions and GitLab CI examples
# (and run by scripts/demo.sh, so the command the workflows run is tested):
#
#   pr-plan.sh BASE HEAD [COMMENT_FILE]
#
# Plans HEAD against live state and writes the Markdown PR comment (what the PR
# changes, in which order, destructive changes first, what was already pending).
# Exit 0 when planning worked, with or without changes; 1 when it failed, and
# the comment then quotes the error so the PR shows it.
#
# Environment: FLEETFORM_BIN (default: fleetform), FLEETFORM_REPO (the fleet
# repository; default: the current directory), FLEETFORM_PATH (the fleet's
# directory in it), and the usual FLEETFORM_STATE_DIR / FLEETFORM_SECRETS_DIR.
set -uo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 BASE HEAD [COMMENT_FILE]" >&2
  exit 1
fi
base=$1 head=$2 out=${3:-fleetform-plan.md}
ff=${FLEETFORM_BIN:-fleetform}
args=(plan --repo "${FLEETFORM_REPO:-.}" --base "$base" --head "$head" --format markdown)
if [[ -n ${FLEETFORM_PATH:-} ]]; then args+=(--path "$FLEETFORM_PATH"); fi
err=$(mktemp)
trap 'rm -f "$err"' EXIT
"$ff" "${args[@]}" >"$out" 2>"$err"
rc=$?
case $rc in
  0 | 2)
    # 2 means "changes present": a normal outcome for a pull request.
    echo "fleetform plan: $( [[ $rc == 2 ]] && echo "changes" || echo "no changes"); comment in $out"
    exit 0
    ;;
  *)
    {
      echo "### fleetform plan failed"
      echo
      echo "Planning \`$head\` against live state did not complete (exit $rc):"
      echo
      echo '```'
      tail -n 60 "$err"
      echo '```'
    } >"$out"
    cat "$err" >&2
    exit 1
    ;;
esac
