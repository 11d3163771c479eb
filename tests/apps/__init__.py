"""Small apps that tests run under real servers (werkzeug, gunicorn)."""
