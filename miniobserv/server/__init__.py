"""The MiniObserv HTTP server: Flask app factory, API blueprints and storage."""
