"""Model directories: what a directory is (a pretraining or fine-tuning RUNDIR, a Hugging Face
BERT, ModernBERT or classifier directory: `resolve`), the model card every exported directory
carries (`card`), and the fill-mask command line both twins use (`fillmask`).
"""
