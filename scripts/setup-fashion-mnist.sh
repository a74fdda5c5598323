#!/usr/bin/env bash
# Install Fashion-MNIST's idx files (Debian package dataset-fashion-mnist, MIT licence) into
# /usr/share/datasets/fashion-mnist/, where jobs/fashion-mnist.yaml reads them by default.
# Idempotent; needs root (or sudo). The quickstart and the test suite do not need it.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  echo "setup-fashion-mnist: already installed in $DIR"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! $SUDO apt-get install -y dataset-fashion-mnist; then
  $SUDO apt-get update
  $SUDO apt-get install -y dataset-fashion-mnist
fi
ls -l "$DIR"
