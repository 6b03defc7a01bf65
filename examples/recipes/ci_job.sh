#!/usr/bin/env bash
# A CI job around ckpt: build the fine-tuning start point, record its tensor hashes, and check
# that a later rewrite (here: a rename and back) did not change a single tensor.
# Every step fails the job with a non-zero exit code and a one-line message.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"

ckpt transfer --config "$here/ci_transfer.toml" -o "$work/init.safetensors" --report "$work/report.json"
ckpt verify "$work/init.safetensors" --write-hashes "$work/init.hashes.json" -q
ckpt rename "$work/init.safetensors" -o "$work/renamed.safetensors" --add-prefix model. -q
ckpt rename "$work/renamed.safetensors" -o "$work/back.safetensors" --strip-prefix model. -q
ckpt verify "$work/back.safetensors" --hashes "$work/init.hashes.json" -q
ckpt diff "$work/init.safetensors" "$work/back.safetensors" -q
echo "ci job passed: $work"
