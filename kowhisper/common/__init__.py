"""Below every phase: audio, text and metrics, transcripts, the workspace layout, files, the CPU, errors and what config
key groups are built from (keys)."""
