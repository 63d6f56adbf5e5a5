"""Building blocks of the gated wav2vec2 model (no fairseq registrations here)."""
