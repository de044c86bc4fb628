"""mimo_lib: the library behind *MIMO from Scratch*.

An audio-video-language model, built one stage per chapter: video frames and
audio and text turned into one token sequence for a GPT decoder.
"""

__version__ = "0.1.0"
