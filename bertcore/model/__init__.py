"""The model's rules, framework-free: the configs (Hugging Face config.json fields) and
presets, Hugging Face names and layouts, ModernBERT's RoPE and window tables, the dropout rule
both twins draw with, and the sizes a config needs against the memory there is.
"""
