"""Settings for running Django's own cache tests against SharedStateCache (see run.py)."""

SECRET_KEY = "sharedstate-django-peer-suite"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "cache",
    "sessions_tests",
]
USE_TZ = False
ROOT_URLCONF = None
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
