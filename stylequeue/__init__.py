"""stylequeue: neural style transfer as a self-hosted service.

The one import root. The repository keeps its parts at the top level (``shared/``,
``web/``, ``worker/``, ``hooks/``, ``cli/``, ``migrations/``); ``pyproject.toml`` maps each
under this package (``stylequeue.shared`` is ``shared/``), so an install puts one name into
site-packages. The parts are imported only as ``stylequeue.<part>``: a lint rule and a test
keep the bare names out (a module under two names is two copies of its state).
"""
