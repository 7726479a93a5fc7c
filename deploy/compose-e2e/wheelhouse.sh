#!/usr/bin/env bash
# Prints the directory of a wheelhouse that deploy/Dockerfile can build from with no index
# (FIT_CHECK_PIP_FIND_LINKS alone): the wheels of pyproject.toml's dependencies (and of the
# extras named in FIT_CHECK_EXTRAS), of its build backend, and pip and wheel, which the
# Dockerfile installs first. Made on this machine with .venv's pip (the container's pip
# cannot reach the index), cached under $FIT_CHECK_CACHE/compose-e2e/wheelhouse keyed by
# that list and by .venv's Python (the image's: 3.11 on x86_64 glibc).
set -euo pipefail
# shellcheck source=deploy/compose-e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="$REPO_ROOT/.venv/bin/python"
[[ -x "$PYTHON" ]] || die "$PYTHON is missing: run make install"

requirements=$(
  FIT_CHECK_EXTRAS="${FIT_CHECK_EXTRAS:-}" "$PYTHON" - "$REPO_ROOT/pyproject.toml" <<'EOF'
import os
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    pyproject = tomllib.load(file)
project = pyproject["project"]
optional = project.get("optional-dependencies", {})
wanted = [extra for extra in os.environ["FIT_CHECK_EXTRAS"].split(",") if extra]
unknown = sorted(set(wanted) - set(optional))
if unknown:
    sys.exit(f"FIT_CHECK_EXTRAS names extras pyproject.toml does not have: {unknown}")
requirements = list(project["dependencies"])
for extra in wanted:
    requirements += [r for r in optional[extra] if not r.startswith(project["name"] + "[")]
requirements += pyproject["build-system"]["requires"] + ["pip", "wheel"]
print("\n".join(requirements))
EOF
)
interpreter=$("$PYTHON" -c 'import platform, sys; print(sys.implementation.cache_tag, platform.machine(), *platform.libc_ver())')
key=$(printf '%s\n' "$interpreter" "$requirements" | sha256_text)
dir="$E2E_CACHE/wheelhouse/$key"
if [[ -f "$dir/.complete" ]]; then
  log "wheelhouse $key: cached ($dir)"
  echo "$dir"
  exit 0
fi

tmp="$dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
log "making wheelhouse $key with .venv's pip ($interpreter)"
printf '%s\n' "$requirements" >"$tmp/requirements.txt"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$tmp" \
  --requirement "$tmp/requirements.txt" >&2
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"
