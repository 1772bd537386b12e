"""Analysis over quantized models: operator support, per-layer sensitivity, accuracy-aware
tuning and the trial runners (local or Ray) it fans out on."""
