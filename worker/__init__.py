"""The worker role: Celery tasks and the style-transfer engine. The only place TensorFlow lives."""
