"""The webhooks worker: delivers jobs' webhook events, light and without TensorFlow.

``celery -A stylequeue.hooks.app worker -Q webhooks --pool threads`` consumes the
``webhooks`` queue, which GPU workers never take (``worker/app.py``). Installed with the
``web`` extra (it renders the job JSON the API serves): ``stylequeue.hooks -> web, shared``;
never ``worker`` (tests/test_layers.py).
"""
