#!/usr/bin/env bash
# Builds one `bootstrap.zip` per Lambda function (runtime provided.al2023) into
# target/lambda/<function>/bootstrap.zip, the paths infra/ deploys.
#
#   functions/build.sh                 # x86_64 (this machine's target)
#   ARCH=arm64 functions/build.sh      # Graviton: needs `rustup target add aarch64-unknown-linux-gnu`
#                                      # and an aarch64 linker (e.g. `cargo install cargo-zigbuild`,
#                                      # then CARGO=cargo-zigbuild)
#
# provided.al2023 has glibc 2.34: the script fails if a binary needs a newer symbol. Build
# on an older distribution, or with cargo-zigbuild and a pinned glibc:
#   CARGO=cargo-zigbuild TARGET=x86_64-unknown-linux-gnu.2.34 functions/build.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

arch="${ARCH:-x86_64}"
case "$arch" in
  x86_64) target="${TARGET:-x86_64-unknown-linux-gnu}" ;;
  arm64) target="${TARGET:-aarch64-unknown-linux-gnu}" ;;
  *) echo "error: ARCH must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
# Symbols stripped by the linker, for any target.
export CARGO_PROFILE_RELEASE_STRIP=true
cargo_cmd="${CARGO:-cargo}"
functions=(enqueue budget finalize scaler)

packages=()
for f in "${functions[@]}"; do packages+=(-p "synthfleet-fn-$f"); done
"$cargo_cmd" build --locked --release --target "$target" "${packages[@]}"

for f in "${functions[@]}"; do
  out="target/lambda/$f"
  mkdir -p "$out"
  bin="target/${target%.2.*}/release/synthfleet-fn-$f"
  # readelf reads the version needs of an ELF file of any architecture.
  newest=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
  if [[ "$(printf '%s\n' "$newest" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]]; then
    echo "error: $f needs $newest; provided.al2023 has GLIBC_2.34 (see the header of $0)" >&2
    exit 1
  fi
  # Lambda's provided runtimes start the file named `bootstrap`.
  cp "$bin" "$out/bootstrap"
  (cd "$out" && rm -f bootstrap.zip && zip -q bootstrap.zip bootstrap)
  echo "$out/bootstrap.zip: $(du -h "$out/bootstrap.zip" | cut -f1) (needs $newest)"
done
