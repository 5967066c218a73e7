"""Korean speech-recognition fine-tuning toolkit (Whisper and CTC models such as wav2vec2): the shared logic behind
the top-level scripts."""
