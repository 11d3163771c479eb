# Tests decorated with unittest.mock's @patch: `patch` is not an HTTP verb and these are not route
# handlers. Modelled on Flask test suites that patch requests.get (sku899/QA_Project2_World_Travel_
# Language_Wizard frontend/testing/test_frontend.py, OliverOakley/project_two service4/tests/
# test_app.py). Pattern only: written anew.
import os
from unittest import mock
from unittest.mock import patch

from app import app

CALLS = []
FAKE_DB = {}


@patch("app.requests.get")
def test_home(mock_get):
    mock_get.return_value.text = "World"
    CALLS.append("home")  # quiet: a test, not a handler
    response = app.test_client().get("/")
    assert b"World" in response.data


@patch.dict(os.environ, {"MODE": "test"})
def test_mode():
    FAKE_DB["mode"] = "test"  # quiet: a test, not a handler
    assert app.test_client().get("/mode").status_code == 200


@mock.patch("app.time.time", return_value=0)
def test_clock(_time):
    FAKE_DB.clear()  # quiet: a test, not a handler
    CALLS.extend(["clock"])  # quiet: a test, not a handler


class TestViews:
    @patch.object(app, "logger")
    def test_logged(self, logger):
        CALLS.append("logged")  # quiet: a test, not a handler
        app.test_client().get("/")
        assert logger.info.called


def setup_module():
    app.config["TESTING"] = True  # quiet: test setup
