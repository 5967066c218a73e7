"""Below every phase: audio, text and metrics, transcripts, the workspace layout, files, the CPU and errors."""
