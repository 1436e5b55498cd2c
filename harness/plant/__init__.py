"""Planting organisms: their definition, the base model's own answers, LoRA training, the gate, and the shipped zoo."""
