#!/usr/bin/env bash
# Build the Debian package: target/debian/flowgate_VERSION_amd64.deb (or into OUT_DIR).
#
#   scripts/package.sh [OUT_DIR]
#
# dpkg-buildpackage with debhelper (why: docs/appliance.md) on a staged copy of dist/debian,
# so nothing is written beside the repository. The binaries are cargo's: target/release is
# built (once, incrementally) unless FLOWGATE_BIN_DIR names a directory that already holds
# `flowgate` and `flowctl` (the package test passes the ones the test run already built).
# Man pages and completions are rendered from the clap definitions by `flowgate generate`.
# FLOWGATE_DEB_COMPRESS: dpkg-deb compression options (default xz; the test uses -Zgzip).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/debian}"
bin="${FLOWGATE_BIN_DIR:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -p flowgate-control --bins)
  bin="$root/target/release"
fi
for b in flowgate flowctl; do
  [ -x "$bin/$b" ] || { echo "package: no $bin/$b" >&2; exit 1; }
done
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")"
[ -n "$version" ] || { echo "package: no version in Cargo.toml" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src="$work/flowgate-$version"
mkdir -p "$src/stage/bin" "$src/stage/etc" "$src/stage/doc" "$src/stage/monitoring"
cp -r "$root/dist/debian" "$src/debian"
cp "$root/dist/systemd/flowgate.service" "$src/debian/flowgate.service"
sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$(date -R)/" \
  "$src/debian/changelog.in" > "$src/debian/changelog"
rm "$src/debian/changelog.in"
cp "$bin/flowgate" "$bin/flowctl" "$src/stage/bin/"
cp "$root/dist/flowgate.toml" "$src/stage/etc/flowgate.toml"
cp "$root/examples/seed.flows" "$src/stage/etc/flows.example"
cp "$root"/docs/{appliance,config,control,flows-frontend,director,routing,dataplane}.md "$src/stage/doc/"
cp "$root"/dist/prometheus/*.yml "$root"/dist/grafana/*.json "$src/stage/monitoring/"
"$bin/flowgate" generate --out "$src/stage/gen" >/dev/null

(cd "$src" && dpkg-buildpackage -b -uc -us >"$work/build.log" 2>&1) || {
  cat "$work/build.log" >&2
  exit 1
}
mkdir -p "$out"
deb="$(ls "$work"/flowgate_"$version"_*.deb)"
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
