"""Evaluation: models scored on a prepared split or on long recordings, with paired intervals, and runs ranked."""
