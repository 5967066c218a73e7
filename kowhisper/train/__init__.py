"""Offline training: the run's settings and data, the Trainer every family builds on, checkpoints, dev scoring against
zero-shot and the run report; run.py is train_offline.py read top to bottom."""
