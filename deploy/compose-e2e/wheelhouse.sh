#!/usr/bin/env bash
# Prints the directory of a wheelhouse that deploy/Dockerfile can build from with no index
# (FIT_CHECK_PIP_FIND_LINKS alone): the wheels of pyproject.toml's dependencies (and of the
# extras named in FIT_CHECK_EXTRAS), of its build backend, and pip and wheel, which the
# Dockerfile installs first. Made on this machine with .venv's pip (the container's pip
# cannot reach the index), cached under $FIT_CHECK_CACHE/compose-e2e/wheelhouse keyed by
# that list and by .venv's Python (the image's: 3.11 on x86_64 glibc).
#
# pip decides a dependency's environment markers for the Python it runs on (.venv's), and
# the image's may be another 3.11 release: Debian bookworm's 3.11.2 in the stand-in, where
# redis needs async-timeout (python_full_version < "3.11.3"). With
# FIT_CHECK_E2E_TARGET_PYTHON=<the image's version> (run.sh sets it) the wheelhouse also
# has every dependency the wheels in it declare for that version.
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
target=${FIT_CHECK_E2E_TARGET_PYTHON:-}
key=$(printf '%s\n' "$interpreter" "$requirements" ${target:+"for Python $target"} | sha256_text)
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

# missing_for VERSION: the dependencies (name and version range), one a line, that a wheel
# in $tmp declares for Python VERSION and that have no wheel there.
missing_for() {
  "$PYTHON" - "$tmp" "$1" <<'EOF'
import sys
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pip's own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
version = sys.argv[2]
environment = dict(default_environment())
environment.update(
    python_full_version=version, python_version=".".join(version.split(".")[:2]), extra=""
)
present = {canonicalize_name(parse_wheel_filename(wheel.name)[0]) for wheel in wheels}
missing = set()
for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
        # The wheel's own (setuptools' wheel holds those of the packages it vendors too).
        (metadata,) = [
            name
            for name in archive.namelist()
            if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
        ]
        for line in archive.read(metadata).decode().splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.split(":", 1)[1].strip())
            wanted = requirement.marker is None or requirement.marker.evaluate(environment)
            if wanted and canonicalize_name(requirement.name) not in present:
                missing.add(f"{requirement.name}{requirement.specifier}")
print("\n".join(sorted(missing)))
EOF
}

if [[ -n "$target" ]]; then
  for _ in 1 2 3 4 5; do
    wanted=$(missing_for "$target")
    [[ -n "$wanted" ]] || break
    mapfile -t missing <<<"$wanted"
    log "adding the wheels Python $target needs besides: ${missing[*]}"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$tmp" \
      "${missing[@]}" >&2
  done
  wanted=$(missing_for "$target")
  [[ -z "$wanted" ]] || die "no wheels for ${wanted//$'\n'/ } (Python $target)"
fi
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"
