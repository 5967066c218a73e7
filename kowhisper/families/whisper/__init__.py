"""The Whisper family: family.py implements kowhisper.families.base.ModelFamily; options.py holds its config keys."""
