"""Data: synthetic audio-video clips, real media files, datasets."""
