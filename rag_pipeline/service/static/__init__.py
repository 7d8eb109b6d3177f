"""Static files of the chat and admin pages (read with importlib.resources)."""
