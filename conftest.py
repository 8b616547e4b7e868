"""Test session set-up shared by every test folder: a private models folder.

Stage one keeps the LiteRT copies of its backbones in ``$XDG_CACHE_HOME/emotion-video/models``
(``extract.litert``); the session points it at a folder of its own, inherited by the processes the
tests start, so that no test reads or writes the user's copies.
"""

import os
import shutil
import tempfile

_SESSION_CACHE = tempfile.mkdtemp(prefix="emotion-video-tests-")


def pytest_configure(config):
    os.environ["XDG_CACHE_HOME"] = _SESSION_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
