"""Serving: transcripts of files and long recordings, the browser demo, merge and export."""
