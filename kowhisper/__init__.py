"""Korean Whisper fine-tuning toolkit: the shared logic behind the top-level scripts."""
