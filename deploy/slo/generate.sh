#!/usr/bin/env bash
# Generates the SLO recording and alerting rules from the SLO spec with Sloth:
#
#   deploy/slo/generate.sh            # deploy/slo/fit-check.yaml -> deploy/prometheus/slo-rules.yml
#   deploy/slo/generate.sh OUT.yml    # the same, written to OUT.yml (tests/deploy/test_slo.py
#                                     # compares that with the committed file)
#
# Sloth comes from deploy/local/build-tools.sh (built from its Go module, cached as
# $FIT_CHECK_CACHE/bin/sloth, default ~/.cache/fit-check/bin/sloth), else from PATH. Its
# version is part of the output (the header and the sloth_version label), so it must be
# the SLOTH_VERSION that build-tools.sh pins: anything else is refused.
#
# Env:
#   FIT_CHECK_CACHE   cache root (default: $HOME/.cache/fit-check)
#   SLOTH             the sloth binary to use (default: the cached one, then PATH)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FIT_CHECK_CACHE:-$HOME/.cache/fit-check}"
SPEC="$REPO_ROOT/deploy/slo/fit-check.yaml"
OUT="${1:-$REPO_ROOT/deploy/prometheus/slo-rules.yml}"

die() { printf '[slo-generate] ERROR: %s\n' "$*" >&2; exit 1; }

want="$(sed -n 's/^SLOTH_VERSION="\(.*\)"$/\1/p' "$REPO_ROOT/deploy/local/build-tools.sh")"
[[ -n "$want" ]] || die "no SLOTH_VERSION in deploy/local/build-tools.sh"

sloth="${SLOTH:-}"
if [[ -z "$sloth" ]]; then
  if [[ -x "$CACHE/bin/sloth" ]]; then sloth="$CACHE/bin/sloth"
  else sloth="$(command -v sloth || true)"; fi
fi
[[ -n "$sloth" && -x "$sloth" ]] || die "sloth not found in $CACHE/bin or on PATH: run deploy/local/build-tools.sh"
have="$("$sloth" version 2>/dev/null)"
[[ "$have" == "$want" ]] || die "$sloth is $have, not $want: run deploy/local/build-tools.sh"

tmp="$(mktemp "$(dirname "$OUT")/.slo-rules.XXXXXX")"
trap 'rm -f "$tmp" "$tmp.body" "$tmp.err"' EXIT
{
  printf '# SLO rules for fit-check: generated from deploy/slo/fit-check.yaml by\n'
  printf '# deploy/slo/generate.sh (Sloth %s). Do not edit; change the spec and re-run it.\n' "$want"
  printf '# Unit tests: promtool test rules deploy/prometheus/slo-rules.test.yml\n'
} >"$tmp"
# Sloth writes its log (and a metrics library's start-up line) to stderr: shown only when
# it fails.
if ! "$sloth" generate --no-log --input "$SPEC" --out "$tmp.body" 2>"$tmp.err"; then
  cat "$tmp.err" >&2
  rm -f "$tmp.body" "$tmp.err"
  die "sloth generate failed for $SPEC"
fi
cat "$tmp.body" >>"$tmp"
rm -f "$tmp.body" "$tmp.err"
chmod 0644 "$tmp"
mv -f "$tmp" "$OUT"
trap - EXIT
echo "$OUT"
