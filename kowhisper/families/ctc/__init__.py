"""The CTC family (wav2vec2-style models): family.py implements kowhisper.families.base.ModelFamily; options.py holds
its config keys."""
