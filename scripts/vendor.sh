#!/usr/bin/env bash
# Refresh the browser libraries in static/vendor/ from the npm registry, as pinned in
# static/vendor/VERSIONS (name, exact version, integrity, files to keep). Each package is
# fetched with `npm pack` into a temporary directory, its integrity checked against the
# manifest, and only the listed files are copied. No CDN, no node_modules left behind.
# Needs node and npm. Usage: scripts/vendor.sh [--check]
#   --check  verify that static/vendor/ matches what the manifest would produce; change nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

manifest="static/vendor/VERSIONS"
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "vendor: unknown option $1 (use --check or nothing)" >&2; exit 2 ;;
esac

command -v npm >/dev/null 2>&1 || { echo "vendor: npm is not installed (apt-get install npm)" >&2; exit 1; }
[ -f "$manifest" ] || { echo "vendor: $manifest is missing" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0

while read -r name version integrity files; do
  case "$name" in ""|\#*) continue ;; esac
  if [ -z "$files" ]; then
    echo "vendor: $manifest: '$name' needs: name version integrity file..." >&2; exit 1
  fi
  if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "vendor: $name: version '$version' is not an exact x.y.z version" >&2; exit 1
  fi
  pkgdir="$work/$name"
  mkdir -p "$pkgdir"
  # npm pack prints JSON describing the tarball it fetched (filename, integrity, ...).
  npm pack "$name@$version" --pack-destination "$pkgdir" --json --silent \
    --ignore-scripts --no-fund --no-audit >"$pkgdir/pack.json"
  got="$(node -e 'const p = require(process.argv[1])[0]; process.stdout.write(p.integrity + " " + p.filename)' "$pkgdir/pack.json")"
  got_integrity="${got%% *}"
  tarball="$pkgdir/${got#* }"
  if [ "$got_integrity" != "$integrity" ]; then
    echo "vendor: $name@$version: integrity $got_integrity does not match the manifest's $integrity" >&2
    exit 1
  fi
  tar -xzf "$tarball" -C "$pkgdir"  # unpacks into $pkgdir/package/
  dest="static/vendor/$name"
  stage="$work/out/$name"
  mkdir -p "$stage"
  for file in $files; do
    case "$file" in /*|*..*) echo "vendor: $name: bad file path $file" >&2; exit 1 ;; esac
    src="$pkgdir/package/$file"
    [ -f "$src" ] || { echo "vendor: $name@$version has no file $file" >&2; exit 1; }
    cp "$src" "$stage/$(basename "$file")"
  done
  printf '%s@%s %s\n' "$name" "$version" "$integrity" >"$stage/PACKAGE"
  if [ "$check" = 1 ]; then
    if diff -r "$stage" "$dest" >/dev/null 2>&1; then
      echo "vendor: $name@$version up to date"
    else
      echo "vendor: $dest differs from $name@$version (run scripts/vendor.sh)" >&2
      status=1
    fi
  else
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$stage"/* "$dest/"
    echo "vendor: $name@$version -> $dest/ ($(cd "$dest" && ls | tr '\n' ' '))"
  fi
done <"$manifest"

exit "$status"
