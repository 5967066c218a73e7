"""Model families: base.py is the interface every family implements (and which model to run), whisper/ and ctc/
implement it, registry.py tells which family a model belongs to. Nothing is imported here, so the interface can be
imported without loading any family."""
