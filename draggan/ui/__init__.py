"""The Gradio editor: per-session state, pure handlers, drawing and the Gradio callbacks."""
