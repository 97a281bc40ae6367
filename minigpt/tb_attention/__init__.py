"""TensorBoard's Attention tab: raw attention weights in the event files (summary.py) and the plugin
that serves them to an interactive view (plugin.py, static/index.js). Nothing here imports torch, so
TensorBoard starts as fast with the plugin as without it."""
