"""What both the web and the worker need: settings, models, storage, progress, the Celery app.

Imports neither ``web`` nor ``worker``.
"""
