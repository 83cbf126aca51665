"""Gradio app for hf-pept, installed as ``hf_pept.app``."""
