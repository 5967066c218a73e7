"""Fine-tune the workspace's model (Whisper with LoRA or in full, or a CTC model) on its Korean data, with no network.

    python train_offline.py workspace=./workspace
    python train_offline.py workspace=./workspace finetune=full              # Whisper: every weight, lr 1e-5
    python train_offline.py workspace=./workspace quick_test=true            # end-to-end check in minutes
    python train_offline.py workspace=./workspace per_device_train_batch_size=4 gradient_accumulation_steps=4
    torchrun --nproc_per_node 2 train_offline.py workspace=./workspace       # DDP, one process per GPU

Rerunning the same command resumes from the run's last complete checkpoint (also after kill -9);
resume_from_checkpoint=PATH picks one, overwrite_output_dir=true starts fresh. The run folder
(<workspace>/runs/<run_name> unless output_dir is set; run_name defaults to whisper-lora, whisper-full, ctc-full, ...)
gets checkpoint-N/, adapter/ (LoRA) or model/ (full fine-tuning), metrics.json, train_log.jsonl, training_curves.png,
tensorboard/ and a model card README.md.
"""

from __future__ import annotations

import os
import sys

import torch
from tqdm.auto import tqdm

from kowhisper.common.files import describe_os_error
from kowhisper.common.workspace import WorkspaceError, model_dir, require_verified_workspace, source_origins
from kowhisper.config import build_parser, parse_config, training_settings_yaml
from kowhisper.families.base import ModelError
from kowhisper.families.registry import family_of, ignored_keys_notice
from kowhisper.train import arguments
from kowhisper.train.checkpoints import CheckpointError, checkpoint_step, resolve_resume_checkpoint
from kowhisper.train.data import load_splits
from kowhisper.train.dev_scoring import final_dev_metrics
from kowhisper.train.precision import choose_precision
from kowhisper.train.report import write_run_outputs
from kowhisper.train.trainer import build_trainer, count_parameters, restore_finished_run
from kowhisper.train.zero_shot import BaseWeights, ZeroShotAsBest, base_beats, judge_against_zero_shot, zero_shot_dev_metrics

EXIT_SETUP_ERROR = 2
EXIT_OUT_OF_MEMORY = 3


def main(argv=None) -> int:
    config, cli = parse_config(build_parser(__doc__), argv)
    # Only rank 0 talks under torchrun; every rank runs the same steps. tqdm.write keeps progress bars intact.
    say = tqdm.write if int(os.environ.get("RANK", "0")) == 0 else (lambda *_: None)
    # CUDA reads this once, when torch first touches the GPU, so it is set before anything does.
    if os.environ.get("CUDA_VISIBLE_DEVICES", config.cuda_visible_devices) != config.cuda_visible_devices:
        say(f"cuda_visible_devices={config.cuda_visible_devices} replaces CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
    os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices
    try:
        # The workspace is the only input: refuse a half-copied or altered one before loading the model.
        manifest = require_verified_workspace(config.workspace_dir)
        say(f"Workspace {config.workspace_dir} verified against its manifest")
    except WorkspaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR

    try:
        config, quick_test_notes = arguments.apply_quick_test(config, cli.explicit_keys)
        for note in quick_test_notes:
            say(note)
        workspace = config.workspace_dir

        # What kind of model (Whisper or CTC) follows from the base model's own config; LoRA or full fine-tuning,
        # the learning rate and the run's name default per family and mode.
        family = family_of(model_dir(workspace))
        if ignored := ignored_keys_notice(family, cli.explicit_keys):
            say(ignored)
        config, default_notes = arguments.resolve_run_defaults(config, family)
        for note in default_notes:
            say(note)
        run_dir = config.run_dir
        # Device and precision: INT8 on CUDA under LoRA; fp32, or bf16 where the CPU does it natively, on CPU.
        precision = choose_precision(config, lora=family.trains_lora(config))
        say(precision.notice())

        data = load_splits(workspace, config)
        say("Data: " + ", ".join(f"{name} {count}" for name, count in data.counts.items()))
        # How long to train, how often to evaluate and save, the warm-up and early stopping: each key left unset follows
        # from the corpus's size (kowhisper/train/schedule.py); the config holds the values from here on.
        config, schedule = arguments.resolve_schedule(config, data.counts["train_hours"], data.counts["train_per_epoch"])

        processor = family.load_processor(workspace, config)
        model = family.load_trainable_model(workspace, config, precision)
        base_weights = BaseWeights(model)  # the base is a candidate for the run's final model too
        trainable, total = count_parameters(model)
        say(f"Parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")

        args = arguments.build_training_arguments(config, precision, run_dir, family)
        plan = arguments.training_plan(len(data.train), args, schedule)
        say(plan.describe())
        trainer = build_trainer(model, processor, args, data, config, family, report=say)

        # The same command again continues from the last checkpoint that was completely written.
        resume = resolve_resume_checkpoint(run_dir, config.resume_from_checkpoint, config.overwrite_output_dir, report=say)
        arguments.check_run_folder_mode(run_dir, resume, lora=family.trains_lora(config))
        for line in family.start_run(config, run_dir, resuming=resume is not None):
            say(line)
        try:
            zero_shot = {}
            if data.dev is not None:
                settings = {"base": {name: entry["sha256"] for name, entry in manifest["files"].items() if name.startswith("model/")},
                            "precision": precision.summary, "generation_max_length": config.generation_max_length,
                            "per_device_eval_batch_size": config.per_device_eval_batch_size}
                zero_shot = zero_shot_dev_metrics(trainer, run_dir, data.dev, settings, report=say)
                if config.metric_for_best_model in zero_shot:
                    trainer.add_callback(ZeroShotAsBest(zero_shot[config.metric_for_best_model]))
            if resume is not None and checkpoint_step(resume) >= plan.total_steps:
                say(f"Resuming from {resume}: already the final step, so only the final evaluation and outputs are redone")
                restore_finished_run(trainer, resume)
                train_metrics = {}
            else:
                say(f"Resuming from {resume} (step {checkpoint_step(resume)} of {plan.total_steps})" if resume
                    else f"Starting a new run in {run_dir}")
                train_metrics = trainer.train(resume_from_checkpoint=str(resume) if resume else None).metrics

            # With load_best_model_at_end the model is now the best checkpoint. It is saved before the final
            # evaluation, so running out of memory there (seed 000's reason for eval_strategy=no) loses nothing.
            if trainer.is_world_process_zero():
                say(f"Final model saved to {family.save_trained(model, processor, run_dir, config)}")
            dev, dev_step = final_dev_metrics(trainer) if data.dev is not None else ({}, None)
            run_config, dev = family.choose_run_config(trainer, config, dev, dev_step, config.metric_for_best_model, report=say)
            if run_config is not config and trainer.is_world_process_zero():
                say(f"Final model saved again, to run as dev chose, to {family.save_trained(model, processor, run_dir, run_config)}")
            if base_beats(zero_shot, dev, config.metric_for_best_model):
                # No checkpoint beat the base on dev: the run's final model is the base itself, as it was measured.
                base_weights.restore(model)
                dev, dev_step = zero_shot, 0
                if trainer.is_world_process_zero():
                    say(f"No checkpoint beat the base on dev ({config.metric_for_best_model}): the final model is the base "
                        f"itself, saved to {family.save_trained(model, processor, run_dir, family.base_run_config(config))}")
        except torch.cuda.OutOfMemoryError:
            print(arguments.out_of_memory_advice(config), file=sys.stderr)
            return EXIT_OUT_OF_MEMORY

        verdict = judge_against_zero_shot(zero_shot, dev, dev_step, config.metric_for_best_model, config, run_dir) if dev else None
        if trainer.is_world_process_zero():
            write_run_outputs(
                run_dir,
                state=trainer.state,
                dev=dev,
                zero_shot=zero_shot,
                verdict=verdict,
                train=train_metrics,
                data_counts=data.counts,
                origins=source_origins(manifest),
                training={"model family": family.name, "precision": precision.summary,
                          "trainable parameters": f"{trainable:,} of {total:,}", "schedule": schedule.summary(),
                          **family.run_summary(config)},
                card_intro=family.model_card_intro(run_dir.name, manifest["config"].get("model_name_or_path", "?"),
                                                   data.counts.get("train", "?"), config),
                config_yaml=training_settings_yaml(config),
            )
            if verdict is not None:
                say(("" if verdict.improved else "WARNING: ") + verdict.line)
            say(f"metrics.json, training curves and model card in {run_dir}")
        return 0
    except (arguments.TrainingSetupError, CheckpointError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except OSError as error:  # a folder that cannot be made or written, a full disk: said plainly, not as a traceback
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_SETUP_ERROR

