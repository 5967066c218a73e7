"""Fine-tune speech recognition on Korean, prepared online and trained offline.

The package is laid out by phase, each depending only on the ones listed before it:

    common/    audio, text and metrics, transcripts, the workspace layout, files, the CPU, errors, config key building blocks
    config/    the configuration groups (each family's own: families/<family>/options.py) and the command line that
               fills them
    families/  base.py: the model-family interface and which model to run; whisper/ and ctc/: the families;
               registry.py: which family a model belongs to
    train/     the run's settings, data, the Trainer every family builds on, checkpoints, dev scoring, the run report;
               run.py: train_offline.py
    online/    sources, preparation, the model store, the workspace build; run.py: the three online scripts
    evaluate/  scoring a split or long recordings, ranking runs; run.py: evaluate_model.py
    serve/     transcription to files, the demo, merge and export; run.py: inference.py

The family packages sit between train's shared parts (their trainers build on train.trainer) and the phases that
choose a family (online preparation, evaluation, serving, train.run).
"""
