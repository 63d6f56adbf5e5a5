"""fairseq tasks: audio_pruning, audio fine-tuning with WER and intent accuracy (fairseq imports every module here)."""
