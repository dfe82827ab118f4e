"""The web role: Flask app factory, JSON API and HTML pages. Never imports TensorFlow."""
