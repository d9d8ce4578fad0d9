#!/usr/bin/env bash
# Re-vendor the web chat's third-party libraries into web/vendor/ from the npm
# registry, at pinned versions checked against their tarballs' sha256. The
# results are committed: building shelf needs neither npm nor the network.
# Source-map comments are dropped (the maps are not vendored).
#
# Usage: scripts/vendor-web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package@version  sha256 of `npm pack`'s tarball
packages=(
  "marked@18.3.0 ac4b23ef5425d83f7aad00a81640d29e5b0fd81a6361a30fa96b4b8bb228ad24"
  "dompurify@3.5.0 faa5f2bfe2814384b83d6edb4ed66812fbfdb2a654b4d59edd4b12304058ec20"
  "@highlightjs/cdn-assets@11.12.0 b8a006d30f45afe783072569f3d69c5b60c0e7b9ca28cd474e12f2584e2a3bd9"
)
for entry in "${packages[@]}"; do
  read -r spec sum <<<"$entry"
  tarball=$(cd "$work" && npm pack --silent "$spec")
  echo "$sum  $work/$tarball" | sha256sum --check --quiet
  mkdir -p "$work/${tarball%.tgz}"
  tar xzf "$work/$tarball" -C "$work/${tarball%.tgz}"
done

out=web/vendor
mkdir -p "$out"
cp "$work"/marked-18.3.0/package/lib/marked.umd.js "$out"/
cp "$work"/marked-18.3.0/package/LICENSE "$out"/marked.LICENSE
cp "$work"/dompurify-3.5.0/package/dist/purify.min.js "$out"/
cp "$work"/dompurify-3.5.0/package/LICENSE "$out"/dompurify.LICENSE
cp "$work"/highlightjs-cdn-assets-11.12.0/package/highlight.min.js "$out"/
cp "$work"/highlightjs-cdn-assets-11.12.0/package/styles/github.min.css "$out"/
cp "$work"/highlightjs-cdn-assets-11.12.0/package/styles/github-dark.min.css "$out"/
cp "$work"/highlightjs-cdn-assets-11.12.0/package/LICENSE "$out"/highlight.js.LICENSE
sed -i '/sourceMappingURL/d' "$out"/*.js
echo "vendored into $out"
