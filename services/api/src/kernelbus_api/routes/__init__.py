"""The REST routers; `app.py` mounts them under base_url."""
