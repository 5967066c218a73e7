"""Measure models on a prepared split: CER (primary for Korean), WER, spacing-free CER and kocer CER; or score
long recordings whole.

    python evaluate_model.py workspace=./workspace                       # base + the latest run, test split
    python evaluate_model.py workspace=./workspace max_samples=50 eval_split=dev
    python evaluate_model.py workspace=./workspace eval_run=whisper-lora all_checkpoints=true
    python evaluate_model.py workspace=./workspace eval_run=base          # the base model alone
    python evaluate_model.py workspace=./workspace eval_run=all           # every run, ranked, with what differs
    python evaluate_model.py workspace=./workspace eval_split=../other/data/cv/test   # a split from elsewhere
    python evaluate_model.py workspace=./workspace eval_longform=meetings.csv        # long recordings + transcripts

eval_run takes a run name, a run/adapter/checkpoint folder, a merged model or a CTranslate2 export. The base
is always measured too and ranked with the rest, so the table shows what fine-tuning added (or that it made
things worse, which gets a warning), each difference with a 95% paired-bootstrap interval and a verdict (better,
no clear difference, worse; bootstrap_resamples and bootstrap_seed set it), and where each model's errors are
(kocer's breakdown). The best model is marked. Per-utterance CSVs and summary.json go to
<workspace>/evaluations/<split>/ (a split from elsewhere: evaluations/<source>-<split>-<hash of its path>/,
long recordings: evaluations/longform-<manifest>-<hash>/), and with eval_run=all also runs.csv and runs.md.
Earlier results in that folder are replaced with a line that says so.
"""

from __future__ import annotations

import os
import sys

from kowhisper.common.errors import ConfigError
from kowhisper.common.files import describe_os_error
from kowhisper.common.runtime import setup_logging
from kowhisper.common.workspace import SPLITS, WorkspaceError, model_dir, require_verified_workspace
from kowhisper.config import build_parser, parse_config
from kowhisper.evaluate.longform import run_longform_evaluation
from kowhisper.evaluate.split import run_evaluation
from kowhisper.families.base import ModelError
from kowhisper.families.registry import family_of, ignored_keys_notice
from kowhisper.online.sources import DataError

EXIT_SETUP_ERROR = 2


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    config, args = parse_config(parser, argv)
    if args.paths:
        parser.error(f"unexpected arguments {args.paths}: settings are key=value (see --help-config)")
    os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices  # read once, when torch first touches CUDA
    setup_logging()

    workspace = config.workspace_dir
    try:
        # A split outside the workspace, or long recordings, are the user's own; only what the manifest vouches for is checked.
        own_split = config.eval_split in SPLITS and not config.eval_longform
        require_verified_workspace(workspace, only=("data", "model") if own_split else ("model",))
        # The workspace's base is always measured, and every run was trained on it: its family is the one evaluated.
        if ignored := ignored_keys_notice(family_of(model_dir(workspace)), args.explicit_keys):
            print(ignored)
        if config.eval_longform:
            summary, table = run_longform_evaluation(config, workspace)
        else:
            summary, table = run_evaluation(config, workspace)
    except (ConfigError, DataError, ModelError, WorkspaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except OSError as error:  # a folder that cannot be written, a full disk: said plainly, not as a traceback
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    print()
    if config.eval_longform:
        print(f"{summary['recordings']} long recordings of {summary['manifest']}")
    else:
        print(f"{summary['utterances']} utterances of {summary['dataset']}")
    print(table)
    print(f"per-utterance results and summary.json: {os.path.dirname(summary['models'][0]['predictions'])}")
    return 0

