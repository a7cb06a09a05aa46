"""Live use of a trained model: the web viewer (``--gui``) and streaming audio features (``--asr``)."""
