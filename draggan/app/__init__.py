"""The page: Gradio layout and events. The only package that imports Gradio (besides app.py and the ZeroGPU wrapper)."""
