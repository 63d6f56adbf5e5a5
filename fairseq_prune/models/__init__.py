"""fairseq models: wav2vec2_ctc_pruning, the gated CTC model (fairseq imports every module here)."""
