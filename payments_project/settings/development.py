"""`make run`: SQLite, the filesystem broker, a local cache and a development JWT key — no services."""

from payments_project.settings.base import *  # noqa: F403
from payments_project.settings.parsing import env, env_bool

DEBUG = env_bool("DEBUG", True)
# A fixed development key so the printed demo token keeps working across restarts.
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default="development-only-jwt-signing-key-change-me-0123456789")
WHITENOISE_USE_FINDERS = True
