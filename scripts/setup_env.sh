#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment at .venv, following the recipe that works on
# Python 3.11: torch first, torchaudio without its dependencies, the build tools, then fairseq-fixed built
# without build isolation, then everything else. Every version comes from constraints.txt.
# Idempotent: when nothing it depends on changed since the last successful run, it returns in well under a second.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.venv"
python=${PYTHON:-python3.11}
stamp="$venv/.fairseq-prune-setup"
want=$(cat constraints.txt setup.py scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing ${need_apt[*]} with apt-get"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

[ -x "$venv/bin/python" ] || { echo "[setup] creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$root/constraints.txt")

echo "[setup] torch, torchaudio (--no-deps), build tools"
"${pip[@]}" torch
"${pip[@]}" --no-deps torchaudio
"${pip[@]}" cython numpy setuptools wheel
if ! "$venv/bin/python" -c "import fairseq" >/dev/null 2>&1; then
  echo "[setup] building fairseq-fixed (about 2-3 minutes)"
  "${pip[@]}" --no-build-isolation --no-deps fairseq-fixed
fi
echo "[setup] fairseq runtime requirements and ours"
"${pip[@]}" hydra-core omegaconf antlr4-python3-runtime PyYAML bitarray cffi regex sacrebleu scikit-learn \
  scipy tqdm packaging soundfile sentencepiece editdistance matplotlib pytest
echo "[setup] flashlight-text (optional for users: beam-search decoding; the tests use it)"
"${pip[@]}" flashlight-text
echo "[setup] onnx, onnxruntime (optional for users: fairseq-prune-onnx and --backend onnxruntime; the tests use them)"
"${pip[@]}" onnx onnxruntime
echo "[setup] fairseq-prune (editable)"
"${pip[@]}" --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -c "import fairseq, torchaudio, fairseq_prune" 2>/dev/null
echo "$want" > "$stamp"
echo "[setup] done"
