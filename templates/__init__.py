# Data, not code: jinja2 templates loaded through importlib.resources (services/templating.py).
