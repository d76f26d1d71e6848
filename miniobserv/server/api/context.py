"""Where the app keeps its dependencies, and how views reach them.

``create_app`` stores the repositories in ``app.extensions["miniobserv"]`` (the Flask
extension convention) and the :class:`ServerConfig` in ``app.extensions["miniobserv.config"]``.
"""

from __future__ import annotations

from flask import Flask, current_app

from miniobserv.config import ServerConfig
from miniobserv.server.storage.base import Repositories

REPOS_KEY = "miniobserv"
CONFIG_KEY = "miniobserv.config"


def install(app: Flask, config: ServerConfig, repos: Repositories) -> None:
    """Attach ``config`` and ``repos`` to ``app``."""
    app.extensions[REPOS_KEY] = repos
    app.extensions[CONFIG_KEY] = config


def current_repos() -> Repositories:
    """The repositories of the app handling the current request."""
    repos: Repositories = current_app.extensions[REPOS_KEY]
    return repos


def current_config() -> ServerConfig:
    """The configuration of the app handling the current request."""
    config: ServerConfig = current_app.extensions[CONFIG_KEY]
    return config


def current_config_of(app: Flask) -> ServerConfig:
    """The configuration installed in ``app`` (outside a request)."""
    config: ServerConfig = app.extensions[CONFIG_KEY]
    return config
