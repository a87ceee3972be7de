#!/usr/bin/env bash
# The wheels the GPU machine lacks for training (its image holds torch, torchvision, OpenCV,
# scikit-image and the rest): downloaded here into .whl/ (ignored by git) for its Python 3.12,
# pinned to the versions requirements.lock gives this project. training/gpu.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" requirements.lock | head -1 || true; }
names=(ultralytics ultralytics-thop ultralytics-platform pydantic pydantic-core pydantic-settings
       python-dotenv annotated-types typing-inspection)
specs=()
for n in "${names[@]}"; do
  spec=$(pin "$n"); [ -n "$spec" ] || spec=$(pin "${n//-/_}")
  [ -n "$spec" ] || { echo "no pin for $n in requirements.lock" >&2; exit 1; }
  specs+=("$spec")
done
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "${specs[@]}"
ls -1 .whl
