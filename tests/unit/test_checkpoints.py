"""Which checkpoints a run's cleanup removes: never the best or the last, and keep_other_checkpoints more besides. A real
run's cleanup is in tests/integration/test_train.py."""

from __future__ import annotations

from kowhisper.train.checkpoints import checkpoints_to_remove


def test_cleanup_keeps_the_best_and_the_last_checkpoint_plus_keep_other_checkpoints_of_the_others(tmp_path):
    steps = [tmp_path / f"checkpoint-{n}" for n in (1, 2, 3, 4, 5)]
    assert checkpoints_to_remove(steps, steps[0], 1) == steps[1:3], "best (1), last (5) and the newest other (4) stay"
    assert checkpoints_to_remove(steps, None, 0) == steps[:4]
    assert checkpoints_to_remove(steps, steps[4], None) == []
