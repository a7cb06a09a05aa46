"""Offline data pipeline: turn a talking-head video into an ER-NeRF training folder.

Entry point: ``python data_utils/process.py data/<ID>/<ID>.mp4``. Each step lives in its own
module (audio, audio_features, frames, landmarks, parsing, background, torso, blinks, tracking,
transforms); ``atomic`` holds the temp-file-then-rename helpers they all use.
"""
