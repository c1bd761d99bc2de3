"""``enat app``: a local web page to sample and edit with a checkpoint or export folder.

``core`` holds the logic as plain functions (tested without a browser); ``ui`` is the thin Gradio
layer (the optional ``[app]`` extra).
"""
